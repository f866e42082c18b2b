/* ctl_internal.h: what the files of ternctl share: the command table and
 * the options every command may take. */
#ifndef TERN_CTL_INTERNAL_H
#define TERN_CTL_INTERNAL_H

#include <stdbool.h>

/* Exit statuses: a failed check and a misused command line differ. */
#define CTL_EXIT_OK 0
#define CTL_EXIT_FAIL 1
#define CTL_EXIT_USAGE 2

struct ctl_options {
	const char *config;     /* -c FILE */
	bool json;              /* --json */
	const char *daemon_dir; /* -d DIR: where master and the workers are */
};

struct ctl_command {
	const char *name;  /* one or more words: "test config" */
	const char *usage; /* arguments after the name */
	const char *help;  /* one paragraph */
	/* argv holds the arguments after the command name, options removed. */
	int (*run)(const struct ctl_options *opts, int argc, char **argv);
	bool takes_json;
	/* Options of its own ("--since N"): left in argv for the handler. */
	bool own_options;
};

extern const struct ctl_command ctl_commands[];

/* Prints "ternctl: message" on stderr and returns CTL_EXIT_USAGE. */
int ctl_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "ternctl: message" on stderr and returns CTL_EXIT_FAIL. */
int ctl_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ctl_config.c */
int ctl_test_config(const struct ctl_options *opts, int argc, char **argv);
int ctl_explain(const struct ctl_options *opts, int argc, char **argv);

/* ctl_control.c */
/* <spool>/public/control for the configuration's spool (the caller frees). */
char *ctl_control_socket_path(const struct ctl_options *opts);
int ctl_start(const struct ctl_options *opts, int argc, char **argv);
int ctl_stop(const struct ctl_options *opts, int argc, char **argv);
int ctl_reload(const struct ctl_options *opts, int argc, char **argv);
int ctl_reopen_log(const struct ctl_options *opts, int argc, char **argv);
int ctl_status(const struct ctl_options *opts, int argc, char **argv);
int ctl_show_version(const struct ctl_options *opts, int argc, char **argv);

/* ctl_queue.c */
int ctl_show_queues(const struct ctl_options *opts, int argc, char **argv);
int ctl_show_topqueues(const struct ctl_options *opts, int argc, char **argv);
int ctl_show_domains(const struct ctl_options *opts, int argc, char **argv);
int ctl_show_status(const struct ctl_options *opts, int argc, char **argv);
int ctl_list(const struct ctl_options *opts, int argc, char **argv);
int ctl_pause_queue(const struct ctl_options *opts, int argc, char **argv);
int ctl_resume_queue(const struct ctl_options *opts, int argc, char **argv);
int ctl_schedule(const struct ctl_options *opts, int argc, char **argv);
int ctl_set_queue(const struct ctl_options *opts, int argc, char **argv);
int ctl_delete(const struct ctl_options *opts, int argc, char **argv);
int ctl_queue_recover(const struct ctl_options *opts, int argc, char **argv);

/* ctl_acct.c */
int ctl_reopen_acct(const struct ctl_options *opts, int argc, char **argv);
int ctl_rotate_acct(const struct ctl_options *opts, int argc, char **argv);
int ctl_acct_tail(const struct ctl_options *opts, int argc, char **argv);

#endif
