/* ternctl.c: the control CLI.  Finds the command in a table (name, usage,
 * help, handler), takes the options shared by all commands (-c FILE before
 * or after the command name, --json where a command offers it) and runs
 * it.  Commands that talk to the running daemons over the control socket
 * are added to the same table. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ctl_internal.h"

static int run_help(const struct ctl_options *opts, int argc, char **argv);

const struct ctl_command ctl_commands[] = {
    {"test config", "[-c FILE] [--json]",
     "Checks the configuration file and everything it includes.  Prints \"Configuration OK.\" and the warnings, "
     "or every error as FILE:LINE: message and exits 1.  --json prints {\"ok\", \"errors\", \"warnings\"} with "
     "each diagnostic's file, line and message.",
     ctl_test_config, true, false},
    {"explain", "[-c FILE] [--json] domain NAME [VMTA] | source IP [SOURCE-NAME]",
     "Shows every setting that applies to mail for a recipient domain (optionally through a virtual MTA or "
     "pool) or to a client IP (optionally through a listener's named source), one per line as "
     "\"directive value  # FILE:LINE\" or \"# default\".  --json prints an object of directive -> {value, from}.",
     ctl_explain, true, false},
    {"start", "[-c FILE] [-d DIR] [--json]",
     "Starts tern: runs master (from DIR, default " TERN_LIBEXECDIR "/tern), which checks the configuration, "
     "opens its sockets and starts every service, and waits until it answers.",
     ctl_start, true, false},
    {"stop", "[-c FILE] [--json]",
     "Stops tern: no new connections, sessions in flight finish, the queue closes cleanly; waits until master "
     "has exited.",
     ctl_stop, true, false},
    {"reload", "[-c FILE] [--json]",
     "Makes master re-read the configuration.  A file with errors is refused (each error printed as "
     "FILE:LINE: message, exit status 1) and the running configuration stays in force.",
     ctl_reload, true, false},
    {"status", "[-c FILE] [--json]",
     "Shows master's pid, uptime and reloads, and for each service its state (running, starting, throttled, "
     "stopping), processes, restarts and pids.",
     ctl_status, true, false},
    {"show version", "[--json]", "Shows the version of ternctl and of the running tern.", ctl_show_version, true,
     false},
    {"show status", "[-c FILE] [--json]",
     "Shows the queue's traffic (recipients in and out since qmgr started), connections, queue totals and the "
     "accounting records waiting for acctd.",
     ctl_show_status, true, false},
    {"show queues", "[-c FILE] [--json] [--paused] [--errors] [domain/vmta]",
     "Shows the queues with recipients: #rcpt, connections, state (pa paused, bo backoff mode), next retry and the "
     "last error.  The queue may be a pattern: */*, domain/*.",
     ctl_show_queues, true, true},
    {"show topqueues", "[-c FILE] [--json]", "Shows the 20 queues with the most recipients.", ctl_show_topqueues, true,
     false},
    {"show domains", "[-c FILE] [--json] [domain]", "Shows recipients and connections per recipient domain.",
     ctl_show_domains, true, false},
    {"list", "[-c FILE] [--json] --queue=domain/vmta [--orig=ADDR] [--rcpt=ADDR] [--maxitems=N]",
     "Lists the recipients waiting in a queue, those matching --orig and --rcpt when given (1000 unless "
     "--maxitems says otherwise).",
     ctl_list, true, true},
    {"pause queue", "[-c FILE] [--json] domain/vmta", "Stops deliveries from the queues that match.", ctl_pause_queue,
     true, false},
    {"resume queue", "[-c FILE] [--json] domain/vmta", "Lets paused queues deliver again.", ctl_resume_queue, true,
     false},
    {"set queue", "[-c FILE] [--json] --mode=backoff|normal domain/vmta",
     "Puts the matching queues into backoff mode (the backoff-* settings apply) or back into normal mode.",
     ctl_set_queue, true, true},
    {"schedule", "[-c FILE] [--json] domain/vmta",
     "Retries the queues now: their back-off ends and deferred recipients are due at once.", ctl_schedule, true, false},
    {"delete", "[-c FILE] [--json] --queue=domain/vmta [--rcpt=ADDR] [--orig=ADDR] [--older-than=T] [--no-accounting]",
     "Deletes waiting recipients of the matching queues (addresses may be patterns); each gets a b record "
     "unless --no-accounting.  No DSN is sent.",
     ctl_delete, true, true},
    {"queue recover", "[-c FILE] [-d DIR] [--json]",
     "Runs catastrophic recovery of the queue (qmgr -C from DIR) while tern is stopped; refuses while it runs.",
     ctl_queue_recover, true, false},
    {"reopen acct", "[-c FILE] [--json]",
     "Makes acctd close and reopen its accounting files, after logrotate moved them.  No record is lost or split: "
     "every new file begins with the header line.",
     ctl_reopen_acct, true, false},
    {"reopen log", "[-c FILE] [--json]",
     "Makes master and every worker reopen log-file, after logrotate moved it (master creates the new file).",
     ctl_reopen_log, true, false},
    {"rotate acct", "[-c FILE] [--json] [FILE]",
     "Rotates an accounting file (or all of them) now, as move-interval and max-size do by themselves.",
     ctl_rotate_acct, true, false},
    {"acct tail", "[-c FILE] [--json] [--since SEQ] [--type d,b] [--fields *,dlvTlsProtocol]",
     "Follows the accounting records as acctd writes them, as CSV (a header line, then one row per record) or "
     "with --json one object per line.  --since SEQ resumes after that sequence number, so a consumer that lost "
     "its connection misses nothing; without it only new records are shown.",
     ctl_acct_tail, true, true},
    {"help", "[COMMAND]", "Shows the commands, or the help of one command.", run_help, false, false},
    {NULL, NULL, NULL, NULL, false, false},
};

static int vreport(int status, const char *fmt, va_list ap)
{
	fputs("ternctl: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	return status;
}

int ctl_usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int status = vreport(CTL_EXIT_USAGE, fmt, ap);
	va_end(ap);
	return status;
}

int ctl_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int status = vreport(CTL_EXIT_FAIL, fmt, ap);
	va_end(ap);
	return status;
}

static void print_usage(FILE *out)
{
	fputs("usage: ternctl [-c FILE] COMMAND [ARGUMENTS]\n\ncommands:\n", out);
	for (const struct ctl_command *c = ctl_commands; c->name; c++)
		fprintf(out, "  %s %s\n", c->name, c->usage);
	fprintf(out, "\n-c FILE names the configuration file (default %s).\n", TERN_SYSCONFDIR "/tern/config");
	fputs("\"ternctl help COMMAND\" describes a command.\n", out);
}

/* How many of argv's leading words the command's name takes, or 0. */
static int name_words(const struct ctl_command *c, int argc, char **argv)
{
	const char *name = c->name;
	int used = 0;
	while (*name) {
		size_t len = strcspn(name, " ");
		if (used >= argc || strlen(argv[used]) != len || strncmp(argv[used], name, len) != 0)
			return 0;
		used++;
		name += len;
		name += *name == ' ';
	}
	return used;
}

static const struct ctl_command *find_command(int argc, char **argv, int *used)
{
	const struct ctl_command *best = NULL;
	*used = 0;
	for (const struct ctl_command *c = ctl_commands; c->name; c++) {
		int n = name_words(c, argc, argv);
		if (n > *used) {
			*used = n;
			best = c;
		}
	}
	return best;
}

static int run_help(const struct ctl_options *opts, int argc, char **argv)
{
	(void)opts;
	if (argc == 0) {
		print_usage(stdout);
		return CTL_EXIT_OK;
	}
	int used;
	const struct ctl_command *c = find_command(argc, argv, &used);
	if (!c || used != argc)
		return ctl_usage_error("no command \"%s\"; try \"ternctl help\"", argv[0]);
	printf("usage: ternctl %s %s\n\n%s\n", c->name, c->usage, c->help);
	return CTL_EXIT_OK;
}

/* Takes the options out of argv (in place) and leaves the operands. */
static int take_options(struct ctl_options *opts, bool json_ok, bool own_options, int *argc, char **argv)
{
	int kept = 0;
	bool operands_only = false;
	for (int i = 0; i < *argc; i++) {
		const char *a = argv[i];
		if (operands_only || a[0] != '-' || a[1] == '\0') {
			argv[kept++] = argv[i];
		} else if (strcmp(a, "--") == 0) {
			operands_only = true;
		} else if (strcmp(a, "-c") == 0) {
			if (i + 1 >= *argc)
				return ctl_usage_error("-c needs a file name");
			opts->config = argv[++i];
		} else if (strcmp(a, "-d") == 0) {
			if (i + 1 >= *argc)
				return ctl_usage_error("-d needs a directory");
			opts->daemon_dir = argv[++i];
		} else if (strcmp(a, "--json") == 0 && json_ok) {
			opts->json = true;
		} else if (own_options) {
			argv[kept++] = argv[i];
		} else {
			return ctl_usage_error("unknown option \"%s\"", a);
		}
	}
	*argc = kept;
	return CTL_EXIT_OK;
}

int main(int argc, char **argv)
{
	struct ctl_options opts = {TERN_SYSCONFDIR "/tern/config", false, NULL};
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			print_usage(stdout);
			return CTL_EXIT_OK;
		}
		if (strcmp(argv[i], "-c") != 0)
			return ctl_usage_error("unknown option \"%s\"; try \"ternctl --help\"", argv[i]);
		if (++i >= argc)
			return ctl_usage_error("-c needs a file name");
		opts.config = argv[i];
	}
	if (i >= argc)
		return ctl_usage_error("no command given; try \"ternctl --help\"");
	int used;
	const struct ctl_command *c = find_command(argc - i, argv + i, &used);
	if (!c)
		return ctl_usage_error("unknown command \"%s\"; try \"ternctl --help\"", argv[i]);
	int rest = argc - i - used;
	char **args = argv + i + used;
	for (int k = 0; k < rest; k++) {
		if (strcmp(args[k], "--help") == 0) {
			printf("usage: ternctl %s %s\n\n%s\n", c->name, c->usage, c->help);
			return CTL_EXIT_OK;
		}
	}
	int status = take_options(&opts, c->takes_json, c->own_options, &rest, args);
	if (status != CTL_EXIT_OK)
		return status;
	return c->run(&opts, rest, args);
}
