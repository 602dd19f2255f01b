/* fm_logits.h — logit effects of SAE features: the tokens each decoder direction promotes and
 * suppresses most when added to the residual stream, through the model's final norm gain and
 * unembedding: W_U (g ⊙ w_dec), as sae_vis / Neuronpedia dashboards show them. The norm's
 * per-token scale is left out (it is positive and the same for every vocabulary entry); for a
 * LayerNorm the direction is centred first, as the norm would centre it. */
#ifndef FM_LOGITS_H
#define FM_LOGITS_H

#include "fm_output.h"

/* For each feature i with alive[i] (all if alive is NULL): the n_top largest and smallest entries
 * of W_U (g ⊙ W_dec[i]). W_U [vocab][d] and g [d] (NULL: ones) given directly. */
int fm_logits_from(fm_logits *out, const float *W_dec, int n, int d, const unsigned char *alive,
                   const float *W_U, int vocab, const float *gain, int center, int n_top); /* SF_ERR: out of memory */

/* The same with W_U and g read from a model directory (stages/forward's loader). SF_OK / SF_ERR. */
int fm_logits_compute(fm_logits *out, const float *W_dec, int n, int d, const unsigned char *alive,
                      const char *model_dir, int n_top);

void fm_logits_free(fm_logits *lg);

#endif
