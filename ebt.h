/* ebt.h - Energy-Based Transformers in C (one header, one source file).

   An Energy-Based Transformer scores a context x together with a candidate
   next-token distribution p with one scalar energy E(x, p); low means the
   candidate fits. Instead of predicting in one pass, the model "thinks":
   gradient descent on E with respect to p. This library implements the
   energy function of SPEC.md (Llama-2 blocks, two-stream attention, energy
   head) with exact analytic first derivatives (dE/dp, dE/dtheta) and second
   derivatives (Hessian-vector products H_pp v and the mixed term
   grad_theta(v . dE/dp)) computed by forward-mode tangents through the
   backward pass (Pearlmutter's R-operator), plus the standard
   autoregressive transformer ("transformer++") as a baseline on the same
   blocks.

   BUILD
     cc -O2 -c ebt.c            (links with -lopenblas -lm)
     or #include "ebt.c" in exactly one translation unit of your program.
     -DEBT_DOUBLE switches the scalar type ebt_real from float to double
     (used by the finite-difference tests; checkpoints stay float32).

   USAGE (also compiled as examples/minimal.c)

     #include "ebt.h"
     ebt_config cfg = ebt_config_default();           // V=256 D=128 L=4 H=4
     ebt_model *m;
     if (ebt_create(&cfg, 42, &m) != EBT_OK) return 1;
     int32_t tokens[3] = {'a', 'b', 'c'};
     float probs[3 * 256], energy[3], grad[3 * 256];
     for (int i = 0; i < 3 * 256; i++) probs[i] = 1.0f / 256;
     ebt_energy(m, tokens, probs, 1, 3, 0, energy, grad); // E and dE/dp
     ebt_free(m);

   CONVENTIONS
   - Shapes are row-major; B batch, S sequence length (predicted positions),
     V vocabulary, D width. tokens[B*S]; probs, grads, tangents [B*S*V];
     energies [B*S]. p_i (row i) is the candidate for token x_{i+1}.
   - Every call returns an ebt_status; EBT_OK is 0. On failure outputs may
     be partly written but the model (weights, gradients) is unchanged,
     unless the function says otherwise. ebt_status_str() names a code;
     ebt_last_error(m) gives a message for the last failed call on m.
   - No global state. The library never prints, exits or aborts.
   - Memory: override EBT_MALLOC, EBT_REALLOC and EBT_FREE (all three or
     none) before including ebt.c.

   THREADS
   - Weights are read-only during evaluation. Calls taking an explicit
     ebt_workspace (ebt_observe, ebt_ws_energy, ebt_ws_hvp) may run on many
     threads at once over one model, each thread with its own workspace,
     as long as no thread modifies the model meanwhile.
   - Calls on an ebt_model without a workspace (ebt_energy, ebt_hvp,
     ebt_*_backward, ebt_lm_*) use a workspace owned by the model and
     gradients owned by the model: one thread per model at a time.

   License: MIT (see LICENSE).
*/
#ifndef EBT_H
#define EBT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef EBT_API
#define EBT_API extern
#endif

#ifdef EBT_DOUBLE
typedef double ebt_real;
#else
typedef float ebt_real;
#endif

typedef enum {
    EBT_OK = 0,
    EBT_ERR_ARG,         /* NULL pointer, size out of range, bad option */
    EBT_ERR_TOKEN,       /* token id outside [0, V) */
    EBT_ERR_NONFINITE,   /* NaN or Inf in an input (or a result) */
    EBT_ERR_NOMEM,       /* allocation failed */
    EBT_ERR_IO,          /* open, read, write, flush or rename failed */
    EBT_ERR_FORMAT,      /* checkpoint malformed or inconsistent */
    EBT_ERR_UNSUPPORTED, /* call not valid for this model's arch */
    EBT_ERR_STATE        /* workspace not prepared (call ebt_observe) or
                            prepared for another model */
} ebt_status;

EBT_API const char *ebt_status_str(ebt_status s);

typedef enum { EBT_ARCH_EBT = 0, EBT_ARCH_TRANSFORMER = 1 } ebt_arch;

/* The blueprint of a model (checkpoint metadata, SPEC section 7). */
typedef struct {
    ebt_arch arch;       /* EBT_ARCH_EBT or EBT_ARCH_TRANSFORMER ("transformer++") */
    int vocab_size;      /* V */
    int d_model;         /* D; D % n_heads == 0 and D/n_heads even */
    int n_layers;        /* L */
    int n_heads;         /* H */
    int d_ff;            /* F, SwiGLU hidden width */
    int max_seq_len;     /* largest S accepted */
    int n_step_embed;    /* ebt only: >0 adds a step-token row per thinking step */
    int tie_pred_embed;  /* ebt only: 1 = candidate embedding uses tok_embed */
    double rope_theta;   /* 10000 */
    double norm_eps;     /* 1e-5 */
    double alpha;        /* ebt only: initial thinking step size (param `alpha`) */
} ebt_config;

/* V=256 D=128 L=4 H=4 F=128 max_seq_len=256, no step embedding, untied,
 * alpha=5 (SPEC 2: the published 500 was tuned for V=50277; a probe at V=256
 * trained best near 5). */
EBT_API ebt_config ebt_config_default(void);

/* Checks a config; EBT_OK or EBT_ERR_ARG with a message in err. */
EBT_API ebt_status ebt_config_check(const ebt_config *cfg, char *err, size_t errlen);

typedef struct ebt_model ebt_model;
typedef struct ebt_workspace ebt_workspace;

/* A new model initialised as in SPEC 2 from a seeded RNG (same seed, same
 * weights on every machine). *out is NULL on failure. */
EBT_API ebt_status ebt_create(const ebt_config *cfg, uint64_t seed, ebt_model **out);
/* Loads a checkpoint (SPEC 7). The file is validated before anything sized
 * by it is allocated. ebt_load_ex also writes a message into err. */
EBT_API ebt_status ebt_load(const char *path, ebt_model **out);
EBT_API ebt_status ebt_load_ex(const char *path, ebt_model **out, char *err, size_t errlen);
/* Saves atomically: writes a temporary file in the same directory, flushes,
 * fsyncs and renames it over path. On failure path is left untouched. */
EBT_API ebt_status ebt_save(const ebt_model *m, const char *path);
EBT_API ebt_status ebt_save_ex(const ebt_model *m, const char *path, char *err, size_t errlen);
EBT_API void ebt_free(ebt_model *m);

EBT_API const ebt_config *ebt_model_config(const ebt_model *m);
EBT_API const char *ebt_last_error(const ebt_model *m);   /* "" if none */

/* Parameters and gradients by checkpoint name (SPEC 2), e.g.
 * "layers.0.attn.wq.weight"; *count gets the number of elements. NULL if
 * the name is unknown for this model. Gradients accumulate (llm.c style)
 * until ebt_zero_grad. */
EBT_API ebt_real *ebt_param(ebt_model *m, const char *name, size_t *count);
EBT_API ebt_real *ebt_grad(ebt_model *m, const char *name, size_t *count);
EBT_API void ebt_zero_grad(ebt_model *m);
EBT_API int ebt_n_tensors(const ebt_model *m);
EBT_API const char *ebt_tensor_name(const ebt_model *m, int i); /* NULL if out of range */
EBT_API size_t ebt_n_params(const ebt_model *m);

/* ---- Energy: simple calls on the model's own workspace ------------------
 * Each call computes the observed stream for tokens and step (the thinking
 * step index; the step token uses min(step, n_step_embed-1); ignored without
 * step embedding). The model's workspace grows on first use for a larger
 * B*S (the only allocation these calls make). Arch ebt only. */

/* energy[B*S] of probs[B*S*V]; grad_probs[B*S*V] = d(sum E)/dp, or NULL. */
EBT_API ebt_status ebt_energy(ebt_model *m, const int32_t *tokens, const ebt_real *probs,
                              int B, int S, int step, ebt_real *energy, ebt_real *grad_probs);
/* hv[B*S*V] = (d^2 (sum E)/dp^2) v. */
EBT_API ebt_status ebt_hvp(ebt_model *m, const int32_t *tokens, const ebt_real *probs,
                           int B, int S, int step, const ebt_real *v, ebt_real *hv);
/* grads += d(sum_i w_i E_i)/dtheta, w = weight[B*S] or NULL for all ones.
 * energy[B*S] receives E if not NULL. */
EBT_API ebt_status ebt_energy_backward(ebt_model *m, const int32_t *tokens, const ebt_real *probs,
                                       int B, int S, int step, const ebt_real *weight,
                                       ebt_real *energy);
/* grads += grad_theta(v . d(sum E)/dp)   (the mixed second derivative);
 * hv[B*S*V] = H_pp v and grad_probs = dE/dp as by-products if not NULL. */
EBT_API ebt_status ebt_mixed_backward(ebt_model *m, const int32_t *tokens, const ebt_real *probs,
                                      int B, int S, int step, const ebt_real *v,
                                      ebt_real *hv, ebt_real *grad_probs);

/* ---- Energy: explicit workspaces (thread-safe over one model) ----------
 * A workspace holds all activations for up to max_B sequences of up to
 * max_S positions; it allocates once, at creation. ebt_observe computes the
 * observed stream of tokens[B*S] once; every ebt_ws_* call after it
 * evaluates a new p against that cached stream (thinking reuses it). */
EBT_API ebt_status ebt_workspace_create(const ebt_model *m, int max_B, int max_S,
                                        ebt_workspace **out);
EBT_API void ebt_workspace_free(ebt_workspace *ws);
EBT_API ebt_status ebt_observe(ebt_workspace *ws, const ebt_model *m, const int32_t *tokens,
                               int B, int S, int step);
/* energy[B*S] (or NULL) and grad_probs[B*S*V] (or NULL) of probs. */
EBT_API ebt_status ebt_ws_energy(ebt_workspace *ws, const ebt_real *probs, ebt_real *energy,
                                 ebt_real *grad_probs);
/* hv = H_pp v; energy and grad_probs as by-products if not NULL. */
EBT_API ebt_status ebt_ws_hvp(ebt_workspace *ws, const ebt_real *probs, const ebt_real *v,
                              ebt_real *hv, ebt_real *energy, ebt_real *grad_probs);
/* Last error message of calls on this workspace ("" if none). */
EBT_API const char *ebt_ws_last_error(const ebt_workspace *ws);

/* ---- transformer++ baseline (arch EBT_ARCH_TRANSFORMER) ---------------- */
/* logits[B*S*V] of next tokens after each prefix of tokens[B*S]. */
EBT_API ebt_status ebt_lm_logits(ebt_model *m, const int32_t *tokens, int B, int S,
                                 ebt_real *logits);
/* loss = mean cross-entropy of logits against targets[B*S] (in [0,V));
 * grads += d loss/dtheta. */
EBT_API ebt_status ebt_lm_backward(ebt_model *m, const int32_t *tokens, const int32_t *targets,
                                   int B, int S, ebt_real *loss);

#ifdef __cplusplus
}
#endif
#endif /* EBT_H */
