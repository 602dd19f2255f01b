/* hook.c — parsing and naming hook points (hook.h): saeflow's names and Hugging Face's
 * hidden_states.N, mapped to one canonical form here and nowhere else. */
#include "hook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow.h"

static const char *const hook_names[] = {"resid_pre", "attn_out", "mlp_hidden", "mlp_out", "resid_post"};
#define HF_PREFIX "hidden_states"

/* The layer number after "prefix.", or -1 if name is not prefix.DIGITS. */
static long layer_after(const char *name, const char *prefix) {
    size_t n = strlen(prefix);
    if (strncmp(name, prefix, n) != 0 || name[n] != '.') return -1;
    const char *p = name + n + 1;
    char *end;
    long layer = strtol(p, &end, 10);
    if (p[0] < '0' || p[0] > '9' || *end || layer > 100000) return -1;
    return layer;
}

int fw_hook_parse(const char *name, fw_hook *out) {
    long layer = layer_after(name, HF_PREFIX);
    if (layer >= 0) {
        *out = layer == 0 ? (fw_hook){FW_RESID_PRE, 0, false} : (fw_hook){FW_RESID_POST, (int)layer - 1, true};
        return SF_OK;
    }
    for (int k = 0; k < (int)(sizeof hook_names / sizeof *hook_names); k++) {
        if ((layer = layer_after(name, hook_names[k])) < 0) continue;
        *out = (fw_hook){(fw_hook_kind)k, (int)layer, false};
        return SF_OK;
    }
    return sf_fail("bad hook \"%s\" (expected resid_pre.L, attn_out.L, mlp_hidden.L, mlp_out.L, resid_post.L, or "
                   "Hugging Face's hidden_states.N = resid_post.N-1)", name);
}

void fw_hook_name(fw_hook h, char *buf, size_t len) { snprintf(buf, len, "%s.%d", hook_names[h.kind], h.layer); }

int fw_hook_canonical(const char *name, char *buf, size_t len) {
    fw_hook h = {.layer = 0};
    if (fw_hook_parse(name, &h) != SF_OK) return SF_ERR;
    fw_hook_name(h, buf, len);
    return SF_OK;
}
