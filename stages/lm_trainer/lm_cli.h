/* lm_cli.h — the `saeflow lm` subcommands (lm_cli.c), for the lm_trainer plugin's stage definition
 * to list as its .commands (a plugin adds commands through a stage it defines). */
#ifndef LM_CLI_H
#define LM_CLI_H

#include "saeflow.h"

extern const sf_command lm_commands[]; /* terminated by an entry with name == NULL */

#endif
