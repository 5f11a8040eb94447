#!/bin/bash
# slow_img_crash.sh - the crash-kill loop of img_crash.sh, many more times.
CRASH_ITERS=${CRASH_ITERS:-60} exec bash "$(dirname "$0")/img_crash.sh"
