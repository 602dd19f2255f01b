/* sf_internal.h — libsaeflow functions the runtime uses but stages don't. */
#ifndef SF_INTERNAL_H
#define SF_INTERNAL_H

#include "saeflow.h"

/* Names the calling thread in log lines ("tok", "fwd[1]"); NULL for the runtime itself. */
SF_EXPORT void sf_log_set_thread_name(const char *name);
/* Log level from SAEFLOW_LOG (debug|info|warn|error), default info. */
SF_EXPORT void sf_log_init_from_env(void);

/* The live progress block at the bottom of a terminal: draws text (lines lines, each ending in a
 * newline) over the block drawn last; log lines are then printed above it and it is redrawn.
 * _end leaves the block on the screen as it is and lets log lines print plainly again. */
SF_EXPORT void sf_log_live_draw(const char *text, int lines);
SF_EXPORT void sf_log_live_end(void);

/* Finishes a message being built and hands its encoded buffer (malloc'd) to the caller, who
 * frees it with free(); the message itself is freed. Used to give buffers to ZeroMQ unchanged. */
SF_EXPORT void *sf_msg_release(sf_msg *m, size_t *len);

#endif
