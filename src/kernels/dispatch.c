/* kernels/dispatch.c — choosing the CPU kernel table at run time, from what
 * the processor reports (BLIS-style), and format facts shared by all ISAs. */
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif

#include "core/error.h"
#include "kernels/kernels.h"
#include "moe/runtime.h"

static int cpu_has(const char *isa)
{
    if (strcmp(isa, "portable") == 0) return 1;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (strcmp(isa, "avx2") == 0) return avx2;
    if (strcmp(isa, "avxvnni") == 0) {
        /* AVX-VNNI: CPUID leaf 7 subleaf 1, EAX bit 4 (the OS saving ymm
         * state is part of the avx2 test above) */
        unsigned a, b, c, d;
        return avx2 && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a >> 4 & 1);
    }
    int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                 __builtin_cpu_supports("fma");
    if (strcmp(isa, "avx512") == 0) return avx512;
    if (strcmp(isa, "avx512vnni") == 0) return avx512 && __builtin_cpu_supports("avx512vnni");
#endif
    return 0;
}

/* Best first. */
static const moe_cpu_kernels *const tables[] = {
#if defined(__x86_64__)
    &moe_kernels_avx512vnni,
    &moe_kernels_avx512,
    &moe_kernels_avxvnni,
    &moe_kernels_avx2,
#endif
    &moe_kernels_portable,
};

static const moe_cpu_kernels *current;

const moe_cpu_kernels *moe_kernels_by_name(const char *name)
{
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++)
        if (strcmp(tables[i]->name, name) == 0) return cpu_has(name) ? tables[i] : NULL;
    return NULL;
}

int moe_cpu_isa_supported(const char *name) { return name && moe_kernels_by_name(name) != NULL; }

moe_status moe_cpu_select_isa(const char *name)
{
    const moe_cpu_kernels *k = name ? moe_kernels_by_name(name) : NULL;
    if (!k)
        return moe_error_set(MOE_ERR_UNSUPPORTED,
                             "CPU kernel set '%s' is unknown or not supported by this CPU "
                             "(choose avx512vnni, avx512, avxvnni, avx2 or portable)", name ? name : "(null)");
    current = k;
    return MOE_OK;
}

const moe_cpu_kernels *moe_kernels(void)
{
    if (!current) {
        const char *env = getenv("MOE_ISA");
        if (env && *env) current = moe_kernels_by_name(env);
        for (size_t i = 0; !current && i < sizeof tables / sizeof tables[0]; i++)
            if (cpu_has(tables[i]->name)) current = tables[i];
    }
    return current;
}

const char *moe_cpu_isa(void) { return moe_kernels()->name; }

int moe_wformat_bits(moe_wformat f) { return f == MOE_WF_Q4 ? 4 : f == MOE_WF_Q8 ? 8 : 0; }

moe_dtype moe_wformat_value_dtype(moe_wformat f)
{
    return f == MOE_WF_F16 ? MOE_DTYPE_F16 : f == MOE_WF_BF16 ? MOE_DTYPE_BF16 : MOE_DTYPE_F32;
}

size_t moe_wformat_value_bytes(moe_wformat f)
{
    return moe_wformat_is_quant(f) ? 0 : moe_dtype_size(moe_wformat_value_dtype(f));
}
