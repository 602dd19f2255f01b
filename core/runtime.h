/* runtime.h — running a pipeline: one libuv loop per process owns every ZeroMQ socket; each
 * stage instance computes on a worker thread of its own. */
#ifndef SF_RUNTIME_H
#define SF_RUNTIME_H

#include <signal.h>

#include "pipeline.h"
#include "run_state.h"

/* Calls every stage's check hook (the stages placed on host, or all with host NULL) without
 * starting anything; prints each finding as "file:line: ..." on stderr and returns how many. */
int sf_check_stages(sf_pipeline *p, const char *host);

/* A SIGINT, SIGTERM or SIGHUP that arrived before sf_run took over the signals (while the stages
 * were being checked): sf_run acts on it as soon as it starts, as if it had arrived then, so the
 * other hosts still hear of the interrupt. 0: none. */
extern volatile sig_atomic_t sf_signal_before_run;

/* Runs the part of p placed on o->host; returns the process exit code (0 ok, 1 failure,
 * 130 interrupted). */
int sf_run(sf_pipeline *p, const sf_run_options *o);

#endif
