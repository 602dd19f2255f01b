/* launch.h — `saeflow launch FILE [run options] [KEY=VALUE ...]`: starts every host's part of a
 * pipeline over ssh (`$SAEFLOW_SSH ADDR 'cd CWD && $SAEFLOW_BIN run FILE --host NAME ...'`),
 * prefixes and gathers their output, and stops the others when one part fails. See core/HOSTS.md. */
#ifndef SF_LAUNCH_H
#define SF_LAUNCH_H

int sf_launch_main(int argc, char **argv);

#endif
