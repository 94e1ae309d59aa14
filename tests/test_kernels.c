/* The library's own scalar kernels, reached by compiling ebt.c into this
 * file: the branch-free float exp against the C library's double exp
 * (ulps of the correctly rounded float result), its edges (NaN, infinities,
 * the clamps) and the sigmoid built on it. The fuzzer found a NaN reaching
 * exp's float-to-integer conversion (undefined behaviour); the NaN cases
 * here run under UBSan in `make asan`. */
#include "../ebt.c"
#include "test_util.h"

#ifndef EBT_DOUBLE
/* distance in float ulps between f and the exact value d */
static double ulps(float f, double d)
{
    float r = (float)d;                        /* correctly rounded (nearly) */
    double ulp = nextafterf(r, INFINITY) - r;
    return fabs((double)f - d) / ulp;
}

/* every 61st float in [-87.3, 88.3] (about 35 million values) */
static void test_exp_accuracy(void **state)
{
    (void)state;
    double worst = 0, at = 0;
    uint32_t lo_bits, hi_bits;
    float lo = -87.3f, hi = 88.3f, zero = 0.0f;
    memcpy(&lo_bits, &lo, 4);
    memcpy(&hi_bits, &hi, 4);
    /* negative floats: bit patterns from 0x80000000 (−0) up to lo_bits */
    for (uint32_t b = 0x80000000u; b <= lo_bits; b += 61) {
        float x; memcpy(&x, &b, 4);
        double e = ulps(ebt__exp(x), exp((double)x));
        if (e > worst) { worst = e; at = x; }
    }
    for (uint32_t b = 0; b <= hi_bits; b += 61) {
        float x; memcpy(&x, &b, 4);
        double e = ulps(ebt__exp(x), exp((double)x));
        if (e > worst) { worst = e; at = x; }
    }
    print_message("ebt__exp: worst %.3f ulps at x = %.9g\n", worst, at);
    assert_true(worst <= 2.0);
    assert_true(ebt__exp(zero) == 1.0f);
}

static void test_exp_edges(void **state)
{
    (void)state;
    volatile float nan = NAN, inf = INFINITY;
    assert_true(isnan(ebt__exp(nan)));
    assert_true(isnan(ebt__exp(-nan)));
    assert_true(ebt__exp(-inf) == 0.0f);
    assert_true(ebt__exp(-100.0f) == 0.0f);          /* no denormals */
    assert_true(isfinite(ebt__exp(inf)) && ebt__exp(inf) > 1e38f);
    assert_true(ebt__exp(100.0f) == ebt__exp(88.3762626f));
    assert_true(isnan(ebt__sigmoid(nan)));
    assert_true(ebt__sigmoid(-inf) >= 0.0f && ebt__sigmoid(-inf) < 1e-38f);  /* 1 / (1 + 2.4e38) */
    assert_true(ebt__sigmoid(inf) == 1.0f);
    assert_true(fabsf(ebt__sigmoid(0.0f) - 0.5f) == 0.0f);
}
#endif

int main(void)
{
#ifdef EBT_DOUBLE
    return 0;
#else
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exp_accuracy),
        cmocka_unit_test(test_exp_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
#endif
}
