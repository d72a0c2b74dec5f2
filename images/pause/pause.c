/*
 * The pod sandbox's pause process for the local cluster's nodes (kondense/pause:3.10).
 * It holds the pod's namespaces, exits on SIGINT/SIGTERM and, as PID 1 of a pod that shares
 * its PID namespace, reaps orphaned children. Built static (gcc -static -O2) so the image is
 * this one file FROM scratch; see images/build.py.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_exit_signal(int sig) {
	(void)sig;
	_exit(0);
}

static void on_child(int sig) {
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
}

int main(int argc, char **argv) {
	if (argc > 1 && strcmp(argv[1], "-v") == 0) {
		puts("kondense pause 3.10");
		return 0;
	}
	if (getpid() != 1) fprintf(stderr, "pause: warning: not PID 1\n");
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_exit_signal;
	if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0) return 1;
	sa.sa_handler = on_child;
	sa.sa_flags = SA_NOCLDSTOP;
	if (sigaction(SIGCHLD, &sa, NULL) < 0) return 2;
	for (;;) pause();
	return 42;
}
