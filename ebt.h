/* ebt.h - Energy-Based Transformers in C (one header, one source file).

   An Energy-Based Transformer scores a context x together with a candidate
   next-token distribution p with one scalar energy E(x, p); low means the
   candidate fits. Instead of predicting in one pass, the model "thinks":
   gradient descent on E with respect to p. This library implements the
   energy function of docs/model.md (Llama-2 blocks, two-stream attention, energy
   head) with exact analytic first derivatives (dE/dp, dE/dtheta) and second
   derivatives (Hessian-vector products H_pp v and the mixed term
   grad_theta(v . dE/dp)) computed by forward-mode tangents through the
   backward pass (Pearlmutter's R-operator), plus the standard
   autoregressive transformer ("transformer++") as a baseline on the same
   blocks.

   BUILD
     cc -O2 -fopenmp -c ebt.c
     cc -fopenmp prog.c ebt.o -lopenblas -lm
     ebt.o built with -fopenmp calls the OpenMP runtime, so the link needs
     -fopenmp too (without OpenMP, drop it from both lines). Or #include
     "ebt.c" in exactly one translation unit of your program. After
     `make install` (see README.md, "Install and link"):
       cc prog.c $(pkg-config --cflags --libs ebt)               libebt.so
       cc prog.c $(pkg-config --static --cflags --libs ebt | sed 's/-lebt/-l:libebt.a/')
     The second links libebt.a (plain -lebt would take libebt.so) and the
     Libs.private it needs: -fopenmp -lopenblas -lm for the default build.
     -DEBT_DOUBLE switches the scalar type ebt_real from float to double
     (used by the finite-difference tests; checkpoints stay float32).

   USAGE (shortened; compiled, with every status checked, as examples/minimal.c)

     #include "ebt.h"
     ebt_config cfg = ebt_config_default();         // V=256 D=128 L=4 H=4
     ebt_model *m, *m2;  ebt_workspace *ws;
     if (ebt_create(&cfg, 42, &m) != EBT_OK) return 1;
     if (ebt_workspace_create(m, 1, S, &ws) != EBT_OK) return 1;  // 1 x S tokens
     ebt_think_opts opts = ebt_think_default();
     opts.steps = 3; opts.restarts = 2;             // keep the lower-energy start
     ebt_think_result res = {0};
     res.probs = probs;                             // ebt_real [S*V]: the answers p
     res.final_energy = energy;                     // ebt_real [S]
     res.steps_taken = steps;                       // int [S]
     ebt_status st = ebt_think(ws, m, tokens, 1, S, &opts, &res);
     if (st != EBT_OK) fprintf(stderr, "%s: %s\n", ebt_status_str(st), ebt_ws_last_error(ws));
     ebt_save(m, "model.safetensors");              // atomic
     ebt_load("model.safetensors", &m2);
     ebt_energy(m2, tokens, probs, 1, S, 0, e2, NULL);  // == ebt_energy(m, ...)
     ebt_workspace_free(ws); ebt_free(m); ebt_free(m2);

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
   - Inside one call: with OpenMP (compile ebt.c with -fopenmp; the Makefile
     does) the row-wise kernels (RMSNorm, RoPE, SwiGLU, softmax,
     cross-entropy), the attention blocks (one per sequence and head) and
     the AdamW update run on the workspace's threads:
     ebt_workspace_set_threads, or ebt_set_threads for the calls that use
     the model's own workspace (training, ebt_energy, ...). The default is
     OpenMP's (OMP_NUM_THREADS, else the number of cores).
   - Matrix products: when OpenBLAS runs single-threaded
     (openblas_set_num_threads(1) or OPENBLAS_NUM_THREADS=1), ebt splits
     the large products into fixed row (or column) blocks over the same
     threads. That is the
     fast setting: on 2 cores a config-A train step runs 1.4x faster than
     with OpenBLAS threading the products and 1.4-1.8x faster than on one
     thread (bench/bench.c, "thread settings"). When OpenBLAS has more than
     one thread (its default), ebt leaves the products to it and runs every
     other kernel on the calling thread, so that two pools of spinning
     threads never compete for the cores. The library never changes
     OpenBLAS's settings itself; examples/ebt_lm.c sets one thread.
   - Every result is bit-identical for any ebt thread count (given the
     OpenBLAS setting): each output is computed by one thread, in the
     order a single thread would use, and product blocks do not depend on
     the thread count.
   - Other processes busy on the same cores slow the threaded kernels down
     more than the serial ones (threads wait for each other); use fewer
     threads then.
   - Weights are read-only during evaluation. Calls taking an explicit
     ebt_workspace (ebt_observe, ebt_observe_append, ebt_ws_energy,
     ebt_ws_hvp, ebt_think, ebt_think_observed, ebt_generate) may run on
     many threads at once over one model, each thread with its own
     workspace, as long as no thread modifies the model meanwhile.
   - Calls on an ebt_model without a workspace (ebt_energy, ebt_hvp,
     ebt_*_backward, ebt_lm_*, ebt_train_*, ebt_zero_grad, ebt_set_threads,
     ebt_save, ebt_param/ebt_grad writes) use a workspace, gradients and
     optimiser state owned by the model: one thread per model at a time,
     and not while other threads evaluate it. ebt_save only reads the
     model, so several saves (to different paths) may run at once.
   - A workspace serves one call at a time (ebt_workspace_set_threads
     included); ebt_create, ebt_load and ebt_config_check are independent
     of each other and of any model. Read-only queries (ebt_model_config,
     ebt_n_params, ebt_tensor_name, ebt_param/ebt_grad pointers) are safe
     from any thread. tests/test_threads.c runs thinking, energy, HVP and
     generation from 4 threads on one model and compares every result bit
     for bit with the single-threaded one.

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

/* Version of this header (the Makefile reads it from here). ebt_version()
 * returns the version the library was built as: compare the two to catch a
 * program compiled against one release and run with another. The shared
 * library's SONAME is libebt.so.<MAJOR>. */
#define EBT_VERSION_MAJOR 0
#define EBT_VERSION_MINOR 2
#define EBT_VERSION_PATCH 0
#define EBT__STR_(x) #x
#define EBT__STR(x) EBT__STR_(x)
#define EBT_VERSION EBT__STR(EBT_VERSION_MAJOR) "." EBT__STR(EBT_VERSION_MINOR) "." \
                    EBT__STR(EBT_VERSION_PATCH)               /* "0.2.0" */
EBT_API const char *ebt_version(void);
/* sizeof(ebt_real) the library was built with: 4, or 8 with -DEBT_DOUBLE (bindings check it) */
EBT_API size_t ebt_real_size(void);

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

/* The matrix-product backend this library was built with: "onednn",
 * "cblas" or "naive" (make GEMM=...), and a description of it (version,
 * kernel, threads) written into buf[n]. */
EBT_API const char *ebt_gemm_backend(void);
EBT_API void ebt_gemm_info(char *buf, size_t n);

typedef enum { EBT_ARCH_EBT = 0, EBT_ARCH_TRANSFORMER = 1 } ebt_arch;

/* The blueprint of a model (checkpoint metadata, docs/model.md section 9.2). */
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
 * alpha=5 (docs/model.md section 10: the published 500 was tuned for
 * V=50277; a probe at V=256 trained best near 5). */
EBT_API ebt_config ebt_config_default(void);

/* Checks a config; EBT_OK or EBT_ERR_ARG with a message in err. */
EBT_API ebt_status ebt_config_check(const ebt_config *cfg, char *err, size_t errlen);

typedef struct ebt_model ebt_model;
typedef struct ebt_workspace ebt_workspace;

/* A new model initialised as in docs/model.md section 2 from a seeded RNG
 * (same seed, same weights on every machine). *out is NULL on failure. */
EBT_API ebt_status ebt_create(const ebt_config *cfg, uint64_t seed, ebt_model **out);
/* Loads a checkpoint (docs/model.md section 9). The file is validated
 * before anything sized by it is allocated. ebt_load_ex also writes a
 * message into err. */
EBT_API ebt_status ebt_load(const char *path, ebt_model **out);
EBT_API ebt_status ebt_load_ex(const char *path, ebt_model **out, char *err, size_t errlen);
/* Saves atomically: writes a temporary file in the same directory, flushes,
 * fsyncs and renames it over path. On failure path is left untouched. */
EBT_API ebt_status ebt_save(const ebt_model *m, const char *path);
EBT_API ebt_status ebt_save_ex(const ebt_model *m, const char *path, char *err, size_t errlen);
EBT_API void ebt_free(ebt_model *m);

EBT_API const ebt_config *ebt_model_config(const ebt_model *m);

/* Free-form metadata kept with the model and saved in the checkpoint (as
 * "user.<key>" in its __metadata__; loaded back): e.g. the recipe that
 * trained it. key: 1-63 bytes of [A-Za-z0-9_.-]; value: under 90 printable
 * ASCII bytes, or NULL to remove the key; at most 64 entries. */
EBT_API ebt_status ebt_meta_set(ebt_model *m, const char *key, const char *value);
EBT_API const char *ebt_meta_get(const ebt_model *m, const char *key);   /* NULL if absent */
EBT_API int ebt_meta_count(const ebt_model *m);
EBT_API const char *ebt_meta_key(const ebt_model *m, int i);   /* NULL if out of range */
EBT_API const char *ebt_last_error(const ebt_model *m);   /* "" if none */

/* Parameters and gradients by checkpoint name (docs/model.md section 2), e.g.
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
 * max_S positions; it allocates them once, at creation. (Thinking keeps a
 * scratch in it that grows on first use, and ebt_workspace_set_threads
 * above the creation's thread count grows the per-thread attention scratch.) ebt_observe computes the
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
/* Threads for this workspace's kernels (see THREADS); n = 0 restores the
 * default; n in [0, 1024]. Without OpenMP the count is always 1. The only
 * allocation is a per-thread attention scratch (about 3 max_S^2 reals per
 * thread) when n exceeds what the workspace was sized for. */
EBT_API ebt_status ebt_workspace_set_threads(ebt_workspace *ws, int n);
EBT_API int ebt_workspace_threads(const ebt_workspace *ws);
/* The same for the model's own workspace (training, ebt_energy, ebt_hvp,
 * ebt_*_backward, ebt_lm_*). */
EBT_API ebt_status ebt_set_threads(ebt_model *m, int n);

/* ---- transformer++ baseline (arch EBT_ARCH_TRANSFORMER) ---------------- */
/* logits[B*S*V] of next tokens after each prefix of tokens[B*S]. */
EBT_API ebt_status ebt_lm_logits(ebt_model *m, const int32_t *tokens, int B, int S,
                                 ebt_real *logits);
/* loss = mean cross-entropy of logits against targets[B*S] (in [0,V));
 * grads += d loss/dtheta. */
EBT_API ebt_status ebt_lm_backward(ebt_model *m, const int32_t *tokens, const int32_t *targets,
                                   int B, int S, ebt_real *loss);


/* ---- Thinking (docs/model.md section 5) --------------------------------
 * Gradient descent on the energy w.r.t. the candidate distribution, from
 * random or given logits: y <- y + sigma N(0,1); p = softmax(y);
 * y <- p - alpha_i dE/dp. A budget of K steps is K updates and K+1
 * energies. Per position, thinking stops by the rules below (energy
 * threshold, change below tol, relative drop below rel_drop, gradient
 * below grad_tol, a shared budget of row evaluations); a stopped position
 * keeps its state and is no longer computed (only moving rows are
 * evaluated). With several starts, each position keeps the start whose
 * final energy is lowest (self-verification).
 * Rounding: a row computed inside a differently shaped matrix product (the
 * moving rows only, last_only, another batch size) may differ from the same
 * row of a full run in the last bits, since a BLAS kernel may add in another
 * order for another shape; so a position near a stopping threshold may
 * stop one step apart. For fixed shapes, options and thread counts the
 * results are the same bits on every run. */
typedef struct {
    int steps;               /* K, updates per position (default 4) */
    double step_size;        /* alpha; <= 0: the model's max(alpha, 1e-4) (default 0) */
    double alpha_rand;       /* r >= 1: alpha_i ~ U[alpha/r, alpha*r] per position (default 1: off) */
    double noise;            /* Langevin sigma added to y before each step (default 0) */
    double init_scale;       /* y_0 ~ N(0, init_scale^2) (default 1) */
    double energy_threshold; /* stop when E_k <= threshold (default -INFINITY: off) */
    double tol;              /* stop when |E_k - E_{k-1}| <= tol, k >= 1 (default -1: off) */
    int restarts;            /* independent starts (default 1) */
    int last_only;           /* 1: think only at each sequence's last position (generation); 0 or 1 */
    uint64_t seed;           /* randomness of y_0, noise and alpha_i */
    const ebt_real *init_logits; /* [restarts * B*P*V] caller-given y_0, or NULL */
    double rel_drop;         /* stop when E_{k-1} - E_k <= rel_drop |E_{k-1}|, k >= 1: the energy
                                no longer falls by that fraction (default -INFINITY: off) */
    double grad_tol;         /* stop at E_k when the RMS over V of dE/dp_k is <= grad_tol
                                (default -1: off) */
    long long row_budget;    /* > 0: at most max(row_budget, B*P) row evaluations per call, all
                                starts together; when the moving positions would exceed what
                                is left, only the highest-energy ones go on (default 0: off) */
    double clamp;            /* > 0: each entry of alpha_i dE/dp is limited to [-clamp, clamp]
                                in the update (the published code's step clamp; default 0: off) */
    int keep_best;           /* 1: each position answers with the lowest-energy state it
                                evaluated, not the last one (default 0); 0 or 1 */
} ebt_think_opts;

/* Options are required (start from ebt_think_default()); NULL is EBT_ERR_ARG,
 * as is any option out of its documented range. */
EBT_API ebt_think_opts ebt_think_default(void);

/* Outputs of ebt_think; every pointer may be NULL. P = S, or 1 with
 * last_only; rows are (b, position) in order. */
typedef struct {
    ebt_real *probs;         /* [B*P*V] the answer softmax(y) of the winning start */
    ebt_real *logits;        /* [B*P*V] its logits y */
    ebt_real *energy;        /* [B*P*(K+1)] E_k of the winning start at k = 0..K; after a
                                position stops its energy stays at the value it stopped with */
    ebt_real *final_energy;  /* [B*P] */
    int *steps_taken;        /* [B*P] updates the winning start made */
    int *winner;             /* [B*P] index of the winning start */
    ebt_real *curvature;     /* [B*P] v.(H_pp v)/v.v at the answer, v = its last move in p
                                (the curvature of the energy along the thinking direction,
                                from the exact HVP; one extra pass; NaN where a position never
                                moved; step-embedding models use the last step's token) */
    /* filled always: */
    long long rows_evaluated; /* predicted-row evaluations (energy+gradient) done, all starts */
    long long rows_budget;    /* the same without any stopping: restarts * B*P * (K+1) */
    int diverged;             /* positions whose energy or gradient became non-finite: they
                                 stop at their last finite state (reported, not an error) */
} ebt_think_result;

/* Observes tokens[B*S] (B <= max_B, S <= max_S of ws), then thinks. Arch ebt.
 * Restarts run one after another in the same workspace (no larger workspace
 * needed). Thinking scratch (about 7 B*P*V reals) is kept in the workspace:
 * allocated by the first call that needs more, reused after. Errors
 * are described by ebt_ws_last_error(ws). */
EBT_API ebt_status ebt_think(ebt_workspace *ws, const ebt_model *m, const int32_t *tokens, int B, int S,
                             const ebt_think_opts *opts, ebt_think_result *res);
/* Thinks about the workspace's current observation (ebt_observe /
 * ebt_observe_append), without recomputing its observed stream. */
EBT_API ebt_status ebt_think_observed(ebt_workspace *ws, const ebt_think_opts *opts, ebt_think_result *res);

/* Appends n tokens to the current observation of a single sequence (B == 1)
 * and computes only their observed rows, attending to the cached keys and
 * values of the earlier ones (the KV cache of generation). EBT_ERR_ARG if
 * the sequence would exceed the workspace's max_S. Models with a step
 * embedding re-observe per thinking step, so appending to them is refused
 * (EBT_ERR_UNSUPPORTED). After an append, the workspace serves energy,
 * HVP and thinking calls; training calls need a fresh ebt_observe. */
EBT_API ebt_status ebt_observe_append(ebt_workspace *ws, const int32_t *tokens, int n);

/* ---- Generation ---------------------------------------------------------
 * Autoregressive: for each new token, think about the next-token
 * distribution (arch ebt) or take the logits (transformer++), then sample
 * with temperature / top-p (temperature 0: argmax). The observed stream is
 * a KV cache: each new token costs its own rows only. When the sequence
 * reaches the workspace's max_S, the oldest half is dropped and the rest
 * re-observed. */
/* What ebt_generate reports about each new token (ebt_gen_opts.on_token).
 * The pointers are valid only during the callback. */
typedef struct {
    int index;               /* position among the new tokens, 0.. */
    int32_t token;           /* the token chosen */
    const ebt_real *probs;   /* [V] the distribution it was sampled from (before temperature/top-p) */
    ebt_real energy;         /* final energy of its thinking (NaN for transformer++) */
    const ebt_real *energies;/* [steps+1] E_k of the winning start, k = 0..steps (NULL for transformer++) */
    int steps;               /* the thinking budget K (0 for transformer++) */
    int steps_taken;         /* updates the winning start made */
    int winner;              /* index of the winning start */
} ebt_gen_token;

/* Called after each token is chosen; a nonzero return stops generation
 * there (ebt_generate then returns EBT_OK; later entries of out are not
 * written). */
typedef int (*ebt_gen_callback)(void *user, const ebt_gen_token *tok);

typedef struct {
    ebt_think_opts think;    /* thinking per token (last_only is implied) */
    double temperature;      /* 0 = argmax (default 1) */
    double top_p;            /* nucleus sampling, 1 = off (default 1) */
    uint64_t seed;           /* sampling randomness */
    int no_cache;            /* 1: re-run the whole prefix per token (for tests/benchmarks); 0 or 1 */
    ebt_gen_callback on_token; /* NULL, or called after each token (streaming, tracing) */
    void *user;              /* passed to on_token */
} ebt_gen_opts;

/* Options are required (start from ebt_gen_default()). */
EBT_API ebt_gen_opts ebt_gen_default(void);

/* Writes n_new tokens continuing prompt[n_prompt] (n_prompt >= 1, any
 * length: only its last max_S tokens are seen, but the thinking seed of
 * each new token derives from its absolute position n_prompt + t, so a
 * long prompt and its last max_S tokens think from different random
 * starts) into
 * out[n_new]; energy[n_new] (or NULL) receives the final energy of each
 * token's thinking (NaN for transformer++), probs[n_new*V] (or NULL) the
 * distribution each token was sampled from (before temperature/top-p).
 * Errors are described by ebt_ws_last_error(ws). */
EBT_API ebt_status ebt_generate(ebt_workspace *ws, const ebt_model *m, const int32_t *prompt, int n_prompt,
                                int n_new, const ebt_gen_opts *opts, int32_t *out, ebt_real *energy,
                                ebt_real *probs);

/* ---- Training (docs/model.md sections 6, 7) ----------------------------
 * One step on a batch: tokens[B*S] are the inputs x_0..x_{S-1} of each
 * sequence, targets[B*S] the tokens each position must predict (usually
 * x_1..x_S). For arch ebt the model thinks K steps from y_0 and the loss is
 * the cross-entropy of the thoughts (mode below); for transformer++ the
 * loss is the plain next-token cross-entropy. The optimiser is AdamW with
 * global-norm clipping, warm-up and cosine decay; its state (and the
 * replay buffer) lives in the model and is saved with it, so a stopped
 * run resumes exactly. All randomness derives from (seed, step number):
 * a refused step retried on the same batch draws the same numbers again.
 * Errors are described by ebt_last_error(m). */
typedef enum {
    EBT_MODE_DETACH = 0,   /* "S1": p_k constant per step; loss = mean_k L_k */
    EBT_MODE_TRUNCATE = 1, /* second order at the last step only; loss = L_K */
    EBT_MODE_FULL = 2      /* back-propagate through every step (H_pp v); loss = mean_k L_k */
} ebt_mode;

typedef struct {
    ebt_mode mode;           /* default DETACH */
    int k_min, k_max;        /* steps per batch, uniform in [k_min, k_max] (default 2, 2) */
    double alpha_rand;       /* r: alpha_i ~ U[alpha/r, alpha*r] per position (default 1: off) */
    double noise;            /* Langevin sigma (default 0) */
    double init_scale;       /* y_0 ~ N(0, init_scale^2) (default 1) */
    int replay_capacity;     /* sequences kept in the replay buffer (default 0: off) */
    double replay_frac;      /* fraction of each batch replayed from it (default 0) */
    int learn_alpha;         /* alpha is trained (default 1); 0 or 1 */
    double alpha_lr_mult;    /* alpha's learning-rate multiplier (default 1) */
    double lr;               /* peak learning rate (default 1e-3) */
    double min_lr;           /* floor of the cosine decay (default 1e-4) */
    long warmup_steps;       /* linear warm-up (default 100) */
    long total_steps;        /* cosine decay ends here (default 10000) */
    double progress;         /* < 0 (default -1): the cosine follows the optimiser step, from
                                warmup_steps to total_steps; in [0, 1]: the caller's position in
                                the run (e.g. elapsed time / time budget) sets it instead, after
                                the warm-up: lr = min_lr + (lr - min_lr)(1 + cos(pi progress))/2 */
    double weight_decay;     /* AdamW, not on norm gains or alpha (default 0.01) */
    double beta1, beta2, eps;/* 0.9, 0.999, 1e-8 */
    double grad_clip;        /* global norm over every gradient incl. alpha's; <= 0 off (default 1) */
    uint64_t seed;
} ebt_train_opts;

EBT_API ebt_train_opts ebt_train_default(void);

typedef struct {
    double loss;             /* the loss that was optimised */
    double ce_first, ce_last;/* mean cross-entropy after step 1 and after the last step (nats) */
    double energy_first, energy_last; /* mean energy at step 0 and at the last step */
    double grad_norm;        /* global gradient norm before clipping */
    double lr;               /* learning rate used */
    double alpha;            /* alpha after the step */
    int k;                   /* thinking steps used */
    long step;               /* optimiser steps taken so far (after this one) */
} ebt_train_stats;

/* Zeroes the gradients and computes them (docs/model.md section 6) without
 * updating anything: ebt_zero_grad, then ebt_train_accumulate with
 * first_seq 0 and weight 1. init_logits [B*S*V] and alpha_mult [B*S]
 * (per-position step multipliers u_i, alpha_i = max(alpha,1e-4) u_i) may
 * be NULL: then they are drawn as the options say. Deterministic given both
 * and noise 0, k_min == k_max, replay off. stats may be NULL. */
EBT_API ebt_status ebt_train_grad(ebt_model *m, const ebt_train_opts *opts, const int32_t *tokens,
                                  const int32_t *targets, int B, int S, const ebt_real *init_logits,
                                  const ebt_real *alpha_mult, ebt_train_stats *stats);
/* One optimiser step on one batch: ebt_zero_grad, ebt_train_accumulate
 * (first_seq 0, weight 1), ebt_train_apply, bit for bit. A non-finite step
 * returns EBT_ERR_NONFINITE and leaves parameters, optimiser state and
 * replay buffer unchanged. Everything the step allocates is allocated
 * before anything changes. */
EBT_API ebt_status ebt_train_step(ebt_model *m, const ebt_train_opts *opts, const int32_t *tokens,
                                  const int32_t *targets, int B, int S, const ebt_real *init_logits,
                                  ebt_train_stats *stats);

/* ---- Training in parts: gradient accumulation, data parallelism ---------
 * An optimiser step over a global batch of G sequences may be computed in
 * micro-batches, on one process or many:
 *
 *   ebt_zero_grad(m);
 *   for each micro-batch (sequences first_seq .. first_seq+B-1 of the G):
 *       ebt_train_accumulate(m, &o, tok, tgt, B, S, first_seq, (double)B / G, NULL, NULL);
 *   (data parallel: sum ebt_train_buffer(m, &n) over the processes, e.g. one
 *    MPI_Allreduce of n floats, in a fixed order)
 *   ebt_train_apply(m, &o, &stats);
 *
 * The randomness of a sequence (y_0, its step sizes, its Langevin noise)
 * derives from (seed, optimiser step, first_seq + b) and the number of
 * thinking steps from (seed, optimiser step), so the split does not change
 * what is computed; only the order of floating-point sums does. Replay is
 * decided by global index too: the last round(replay_frac * G) sequences of
 * the global batch continue from rows of the replay ring, so micro-batches
 * of one model replay what the whole batch would. The ring is per model
 * (per process): ebt_train_apply pushes the sequences this model
 * accumulated, so with several processes each replays from its own ring. */

/* The statistic sums ebt_train_accumulate adds behind the gradients. */
#define EBT_TRAIN_NSUMS 6
/* Adds weight * d(loss of this micro-batch)/dtheta to the gradients (alpha's
 * included) and weight * (1, loss, ce_first, ce_last, energy_first,
 * energy_last) to the sums behind them. weight > 0 is the micro-batch's
 * share of the step's loss (B / G for a mean over the global batch);
 * first_seq >= 0 its first sequence's index in the global batch. On any
 * failure the gradients, the sums and the pending replay sequences are as
 * they were. init_logits / alpha_mult as in ebt_train_grad. */
EBT_API ebt_status ebt_train_accumulate(ebt_model *m, const ebt_train_opts *opts, const int32_t *tokens,
                                        const int32_t *targets, int B, int S, long first_seq, double weight,
                                        const ebt_real *init_logits, const ebt_real *alpha_mult);
/* The gradients of every tensor in checkpoint order (ebt_tensor_name),
 * then the EBT_TRAIN_NSUMS sums: one contiguous array of *count =
 * ebt_n_params(m) + EBT_TRAIN_NSUMS reals, owned by the model (valid until
 * ebt_free), written by the ebt_train_* and ebt_*_backward calls, zeroed by
 * ebt_zero_grad. */
EBT_API ebt_real *ebt_train_buffer(ebt_model *m, size_t *count);
/* The optimiser step on the gradients as they stand: clipping by their
 * global norm (alpha's included), AdamW with warm-up and cosine schedule,
 * then the replay ring takes the sequences accumulated since ebt_zero_grad.
 * stats (may be NULL) gets the means of the sums, the norm, lr and alpha.
 * Non-finite gradients or a non-finite update return EBT_ERR_NONFINITE,
 * change nothing but zero the gradients, and drop the pending sequences. */
EBT_API ebt_status ebt_train_apply(ebt_model *m, const ebt_train_opts *opts, ebt_train_stats *stats);

/* Optimiser steps taken (0 for a new model). */
EBT_API long ebt_train_steps_done(const ebt_model *m);
/* Forgets the training state: AdamW moments, the step count and the replay
 * buffer (e.g. to share the weights alone, or to fine-tune afresh); the
 * weights stay. A later ebt_save writes the weights only. */
EBT_API void ebt_train_reset(ebt_model *m);

#ifdef __cplusplus
}
#endif
#endif /* EBT_H */
