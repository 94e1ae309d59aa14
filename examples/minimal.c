/* The main job of ebt in one program (ebt.h's USAGE): create a model, let it
 * think about the next byte after each prefix of a short text, save it,
 * load it back and check that the loaded model gives the same energies.
 * Every status is checked. The model is untrained (random weights), so its
 * guesses are arbitrary; examples/ebt_lm.c trains one.
 *   cc -fopenmp -I. examples/minimal.c ebt.c -lopenblas -lm    (or -DEBT_DOUBLE too)
 *   cc examples/minimal.c $(pkg-config --cflags --libs ebt)    (installed ebt)
 * Usage: minimal [checkpoint path; default minimal.safetensors, removed after] */
#include <stdio.h>
#include <string.h>
#include "ebt.h"

#define S 6   /* bytes of context */
#define V 256 /* vocabulary: bytes */

/* on failure: name the call, its status and the message, and clean up */
#define CHECK(call, msg) do { if ((st = (call)) != EBT_OK) { \
    fprintf(stderr, "minimal: %s: %s: %s\n", #call, ebt_status_str(st), msg); goto done; } } while (0)

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "minimal.safetensors";
    static ebt_real probs[S * V];
    ebt_real final_energy[S], e_saved[S], e_loaded[S];
    int32_t tokens[S];
    int steps_taken[S];
    char err[256] = "";
    ebt_model *m = NULL, *m2 = NULL;
    ebt_workspace *ws = NULL;
    ebt_status st;
    int rc = 1;

    printf("ebt library %s, header %s\n", ebt_version(), EBT_VERSION);
    if (strcmp(ebt_version(), EBT_VERSION) != 0) { fprintf(stderr, "minimal: version mismatch\n"); return 1; }
    for (int i = 0; i < S; i++) tokens[i] = (unsigned char)"Hello,"[i];

    ebt_config cfg = ebt_config_default();             /* V=256 D=128 L=4 H=4 */
    CHECK(ebt_create(&cfg, 42, &m), "");
    CHECK(ebt_workspace_create(m, 1, S, &ws), "");     /* 1 sequence of up to S */

    ebt_think_opts opts = ebt_think_default();
    opts.steps = 3;                                    /* gradient steps on E(x, p) over p */
    opts.restarts = 2;                                 /* keep the start with the lower energy */
    ebt_think_result res = {0};                        /* the outputs we want: */
    res.probs = probs;                                 /* [S*V] the answers p */
    res.final_energy = final_energy;                   /* [S] their energies */
    res.steps_taken = steps_taken;                     /* [S] */
    CHECK(ebt_think(ws, m, tokens, 1, S, &opts, &res), ebt_ws_last_error(ws));
    for (int i = 0; i < S; i++) {
        int best = 0;
        for (int v = 1; v < V; v++) if (probs[i * V + v] > probs[i * V + best]) best = v;
        printf("after '%c': energy %+.6f after %d steps, next byte %3d (p = %.5f)\n", (char)tokens[i],
               (double)final_energy[i], steps_taken[i], best, (double)probs[i * V + best]);
    }

    CHECK(ebt_save_ex(m, path, err, sizeof err), err);  /* ebt_save with a message */
    CHECK(ebt_load_ex(path, &m2, err, sizeof err), err);  /* ebt_load with a message */
    remove(path);
    CHECK(ebt_energy(m, tokens, probs, 1, S, 0, e_saved, NULL), ebt_last_error(m));
    CHECK(ebt_energy(m2, tokens, probs, 1, S, 0, e_loaded, NULL), ebt_last_error(m2));
    if (memcmp(e_saved, e_loaded, sizeof e_saved) != 0) {
        fprintf(stderr, "minimal: the loaded model's energies differ\n");
        goto done;
    }
    printf("saved to %s, loaded, removed: the same energies\n", path);
    rc = 0;
done:
    ebt_workspace_free(ws);
    ebt_free(m2);
    ebt_free(m);
    return rc;
}
