/* progress.h — what a running pipeline shows: the live progress lines (or log lines every 10 s)
 * and the summary at the end, drawn from the run's state (run_state.h). */
#ifndef SF_PROGRESS_H
#define SF_PROGRESS_H

#include "run_state.h"

/* Draws the progress now if it is due (final: the last time, whatever the interval). */
void sf_progress_tick(sf_runtime *rt, int final);
/* The run summary: every edge and each stage's counters. */
void sf_progress_summary(sf_runtime *rt);

#endif
