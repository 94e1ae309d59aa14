/* The usage example at the top of ebt.h, as a program: the energy of a
 * uniform candidate after "abc" and the gradient that thinking follows. */
#include <stdio.h>
#include "ebt.h"

int main(void)
{
    ebt_config cfg = ebt_config_default();           // V=256 D=128 L=4 H=4
    ebt_model *m;
    if (ebt_create(&cfg, 42, &m) != EBT_OK) return 1;
    int32_t tokens[3] = {'a', 'b', 'c'};
    float probs[3 * 256], energy[3], grad[3 * 256];
    for (int i = 0; i < 3 * 256; i++) probs[i] = 1.0f / 256;
    ebt_energy(m, tokens, probs, 1, 3, 0, energy, grad); // E and dE/dp
    ebt_free(m);

    for (int i = 0; i < 3; i++) {
        float gmax = 0;
        for (int j = 0; j < 256; j++) gmax = grad[i * 256 + j] > gmax ? grad[i * 256 + j] : gmax;
        printf("position %d: energy %+.5f  max dE/dp %.5f\n", i, energy[i], gmax);
    }
    return 0;
}
