/* launch.h — `saeflow launch FILE [run options] [KEY=VALUE ...]`: starts every host's part of a
 * pipeline over ssh (`$SAEFLOW_SSH ADDR 'cd CWD && exec $SAEFLOW_BIN run FILE --host NAME
 * --stop-on-stdin-eof ...'`), prefixes and gathers their output, and stops the others (by closing
 * their stdin) when one part fails or on a signal. See core/HOSTS.md. */
#ifndef SF_LAUNCH_H
#define SF_LAUNCH_H

int sf_launch_main(int argc, char **argv);

#endif
