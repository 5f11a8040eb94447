#!/bin/bash
# scripts/api-tools.sh - the OpenAPI validators the tests run on
# api/openapi.yaml, from the npm registry, at pinned versions, kept in a
# cache outside the repository:
#
#   ${SHOAL_CACHE:-$HOME/.cache/shoal}/npm/node_modules/.bin/{redocly,swagger-cli}
#
#   @redocly/cli 1.34.20            `redocly lint` (structure and the
#                                   recommended-strict rules, api/redocly.yaml)
#   @apidevtools/swagger-cli 4.0.4  `swagger-cli validate` (the OpenAPI 3.0
#                                   JSON schema and every $ref)
#
# Usage: scripts/api-tools.sh [--quiet]
#   Installs them when missing or at another version (npm install --prefix,
#   under a lock, so concurrent callers do not install over each other) and
#   prints the directory of their commands on stdout.  Exit status: 0 ready;
#   3 npm is missing or the install failed (offline: callers say so and skip,
#   or fail where SHOAL_REQUIRE_API_TOOLS=1, as scripts/test.sh all sets).
#   Needs node 18.17 or later and npm (scripts/install-deps.sh).
set -u
REDOCLY=1.34.20
SWAGGER=4.0.4
DIR=${SHOAL_CACHE:-$HOME/.cache/shoal}/npm
QUIET=0
[ "${1:-}" = --quiet ] || [ "${1:-}" = -q ] && QUIET=1

# have: both tools are installed at the pinned versions.
have() {
	[ -x "$DIR/node_modules/.bin/redocly" ] && [ -x "$DIR/node_modules/.bin/swagger-cli" ] &&
		grep -q "\"version\": \"$REDOCLY\"" "$DIR/node_modules/@redocly/cli/package.json" 2>/dev/null &&
		grep -q "\"version\": \"$SWAGGER\"" "$DIR/node_modules/@apidevtools/swagger-cli/package.json" 2>/dev/null
}

if ! have; then
	command -v npm >/dev/null || { echo "api-tools: npm is missing (scripts/install-deps.sh installs it)" >&2; exit 3; }
	mkdir -p "$DIR" || exit 3
	exec 9>"$DIR.lock"
	flock 9
	if ! have; then
		[ $QUIET = 1 ] || echo "api-tools: installing @redocly/cli@$REDOCLY @apidevtools/swagger-cli@$SWAGGER into $DIR" >&2
		if ! npm install --prefix "$DIR" --no-audit --no-fund --no-save --loglevel=error \
			"@redocly/cli@$REDOCLY" "@apidevtools/swagger-cli@$SWAGGER" >"$DIR.log" 2>&1 || ! have; then
			echo "api-tools: npm install failed: $(grep -m1 -i 'error' "$DIR.log" || tail -1 "$DIR.log")" >&2
			exit 3
		fi
	fi
fi
echo "$DIR/node_modules/.bin"
