/*
 * commands.h - the `shoal` verbs.  One file per verb in src/cli/, in the
 * manner of kvmtool's builtin-*.c; main.c holds the table that dispatches
 * to them.  Each takes the arguments after the verb (argv[0] is the verb)
 * and returns the process exit status (base/exitcode.h).
 */
#ifndef SHOAL_CLI_COMMANDS_H
#define SHOAL_CLI_COMMANDS_H

int cmd_run(int argc, char **argv);        /* run.c: boot a VM in the foreground */
int cmd_cpu_templates(int argc, char **argv); /* cpu_templates.c: list CPU templates */
int cmd_img(int argc, char **argv);        /* img.c: disk image tool */
int cmd_vhost_user(int argc, char **argv); /* vhost_user.c: serve a device to another VMM */
int cmd_snapshot(int argc, char **argv);   /* snapshot.c: save a running VM (shoal run --api-socket) */
int cmd_migrate(int argc, char **argv);    /* migrate.c: move a running VM live (shoal run --incoming) */
int cmd_disk(int argc, char **argv);       /* disk.c: plug a disk into a running VM, or unplug it */
int cmd_snapshot_api(int argc, char **argv); /* snapshot_api.c: list, show, delete shoald's snapshots */
int cmd_snapshot_store(int argc, char **argv); /* snapshot_store.c: push, pull through shoald's store */
/* clients of shoald's API (issue #5) */
int cmd_vm(int argc, char **argv);         /* vm.c: create, list, start, stop ... VMs */
int cmd_vm_migrate(int argc, char **argv); /* vm_migrate.c: `vm migrate`, live to another shoald */
int cmd_console(int argc, char **argv);    /* console.c: attach to a VM's console, or its log */
int cmd_events(int argc, char **argv);     /* events.c: the host's event log */
int cmd_metrics(int argc, char **argv);    /* metrics.c: host and VM figures */
int cmd_store(int argc, char **argv);      /* store.c: the image store (src/store/) */
int cmd_net(int argc, char **argv);        /* net.c: shoald's networks (bridge, NAT, DHCP) */

#endif
