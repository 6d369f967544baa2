/*
 * rcrun-init: the PID 1 of `rcrun run --init`. Built statically by build.rs and embedded in
 * rcrun, which runs it from a sealed memfd (never the host's rcrun binary: CVE-2019-5736).
 *
 * Usage: rcrun-init PID   (PID: the command, already forked by the container's first process)
 *
 * The forwarded signals and SIGCHLD arrive blocked (the mask survives execve, signal(7)), so
 * none sent before this program started is lost: they wait in the queue for the signalfd.
 * PID 1 only receives signals it has a handler for (pid_namespaces(7)), and rcrun reads SigCgt
 * to decide whether PID 1 acts on a forwarded signal, so do-nothing handlers are installed too.
 * Every child is reaped; the exit status is the command's (128+N if signal N killed it).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

static const int forwarded[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 };

static void ignore(int sig) { (void)sig; }

int main(int argc, char **argv)
{
	if (argc != 2)
		return 125;
	pid_t command = (pid_t)atoi(argv[1]);
	if (command <= 0)
		return 125;
	/* Nothing here is worth reading from outside; no core dumps, no ptrace by non-root. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	struct sigaction sa = { 0 };
	sa.sa_handler = ignore;
	sa.sa_flags = SA_RESTART;
	for (unsigned i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) {
		sigaddset(&set, forwarded[i]);
		sigaction(forwarded[i], &sa, NULL);
	}
	sigaction(SIGCHLD, &sa, NULL);
	sigprocmask(SIG_BLOCK, &set, NULL);
	int sfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sfd < 0)
		return 125;

	for (;;) {
		struct signalfd_siginfo info;
		if (read(sfd, &info, sizeof info) != sizeof info)
			continue;
		if (info.ssi_signo != SIGCHLD) {
			kill(command, (int)info.ssi_signo);
			continue;
		}
		int status;
		pid_t pid;
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
			if (pid != command)
				continue;
			if (WIFEXITED(status))
				_exit(WEXITSTATUS(status));
			if (WIFSIGNALED(status))
				_exit(128 + WTERMSIG(status));
		}
	}
}
