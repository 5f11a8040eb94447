/* run.h - `shoal run` argument parsing, exposed for unit tests. */
#ifndef SHOAL_CLI_RUN_H
#define SHOAL_CLI_RUN_H

#include <stdbool.h>

#include "base/error.h"
#include "vmm/config.h"
#include "vmm/jail.h"

struct run_opts {
	bool help;            /* --help: print usage and exit 0 */
	bool print_config;    /* --print-config: print the JSON and exit 0 */
	int verbose;          /* -v count */
	char *api_socket;     /* --api-socket PATH (malloc'd) or NULL */
	char *restore;        /* --restore DIR (malloc'd) or NULL */
	bool console_set;     /* --console given */
	bool clone;           /* --clone: memory copy-on-write from the snapshot */
	bool mem_recovery;    /* --mem-recovery: memory errors (mem/page_hash.h) */
	char *disk_overlay_dir; /* --disk-overlay-dir DIR (malloc'd) or NULL */
	const char *macs[VM_MAX_NETS]; /* --mac MAC, repeatable (argv's strings) */
	int nmacs;
	uint32_t cid;         /* --cid N: a restored VM's new vsock CID, 0 none */
	const char *taps[VM_MAX_NETS]; /* --tap NAME, repeatable: a restored VM's TAPs */
	int ntaps;
	const char *vsock_socket; /* --vsock-socket PATH: a restored VM's, or NULL */
	char *incoming;       /* --incoming URI: wait for a migration (state/migrate.h) */
	char *exit_file;      /* --exit-file PATH: how the VMM ended, as JSON (run.c) */
	int seccomp;          /* --seccomp: 1 on, -1 off (debugging), 0 not given */
	struct jail_opts jail; /* --jail DIR[,uid=N][,gid=N][,bind=PATH]... (vmm/jail.h) */
	int vm_flag;          /* the first flag of the VM's own settings given
	                       * (which --restore refuses), 0 if none */
};

/* Fill `cfg` (already vm_config_init'ed) from `--config FILE` first and then
 * the other flags, which override it.  argv[0] is "run".  0 or -1 with `e`. */
int run_parse_args(int argc, char **argv, struct vm_config *cfg, struct run_opts *o,
		   struct error *e);

extern const char run_usage[];

#endif
