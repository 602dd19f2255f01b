/* sae_pth.h — reads `torch.save` files of a state dict of tensors (llm-jp-sae's `sae.pth`) without
 * Python: the zip archive through libzip, `data.pkl` through a restricted unpickler that accepts
 * only what such a file holds (collections.OrderedDict, torch._utils._rebuild_tensor_v2, the
 * BFloat16/Float/Half storage classes as persistent ids, ints, strings, tuples, dicts) and refuses
 * every other opcode or global by name. Everything is bounds-checked: the file is untrusted.
 *
 * sae_pth_load builds an sae_model from llm-jp-sae's 2025-03 `SparseAutoEncoder` state dict
 * (encoder.weight [n,d], encoder.bias [n], W_dec [n,d], b_dec [d], bf16). The file records neither k
 * nor the input normalisation: they come from the caller or from the directory names that code saved
 * under (`.../k_32/nl_Scalar/ckpt_0988240/lr_0.001/sae.pth`), and m->norm_from says which.
 */
#ifndef SAE_PTH_H
#define SAE_PTH_H

#include <stddef.h>
#include <stdint.h>

#include "sae.h"

#define SAE_PTH_MAX_DIMS 4

typedef struct sae_pth_tensor {
    char *name;                       /* the state dict's key */
    sf_dtype dtype;                   /* SF_BF16, SF_F32 or SF_F16 */
    int ndim;
    int64_t shape[SAE_PTH_MAX_DIMS];  /* row-major, contiguous (checked) */
    int64_t offset;                   /* in elements, into its storage */
    int64_t entry;                    /* the storage's zip entry */
} sae_pth_tensor;

typedef struct sae_pth sae_pth;

/* Opens a torch.save zip from a file, or from memory (data must outlive the handle). NULL with
 * sf_last_error() set when it is not such a file or holds anything a state dict of tensors does not. */
sae_pth *sae_pth_open(const char *path);
sae_pth *sae_pth_open_mem(const void *data, size_t size);
void sae_pth_close(sae_pth *p);

size_t sae_pth_count(const sae_pth *p);
const sae_pth_tensor *sae_pth_at(const sae_pth *p, size_t i);
const sae_pth_tensor *sae_pth_find(const sae_pth *p, const char *name);
/* Reads a tensor's elements as floats into dst (numel floats). SF_OK or SF_ERR. */
int sae_pth_read(sae_pth *p, const sae_pth_tensor *t, float *dst);

/* The restricted unpickler alone (the fuzzer's entry): parses a state dict pickle; SF_OK or SF_ERR. */
int sae_pth_check_pickle(const void *data, size_t size);

/* llm-jp-sae 2025-03's --nl from the directories path lies under (a directory needs a trailing '/'):
 * nl_Scalar (x/||x||: unit) or nl_None; *from says so. SF_OK, SF_DONE when no nl_ directory, SF_ERR
 * (sf_fail) for another value (Standardization: unsupported). */
int sae_pth_dir_norm(const char *path, sae_norm_mode *norm, char *from, size_t cap);

/* Loads llm-jp-sae's 2025-03 sae.pth. k <= 0: from a `k_N` directory in path; norm < 0: from an
 * `nl_Scalar` (x/||x||: unit) or `nl_None` directory; either missing is an error naming the option. */
int sae_pth_load(sae_model *m, const char *path, int k, int norm);

#endif
