/* engine/sampler.c — greedy, temperature, top-k, top-p and min-p sampling.
 *
 * Per call: one pass over the logits collects the usable tokens (NaN and
 * -inf dropped) and their maximum. Nothing sorts the whole vocabulary:
 * top-k is a bounded heap, O(V log k), that sorts only the k it keeps; top-p
 * without top-k is a quickselect on running sums, O(V) expected. The
 * probabilities are kept unnormalised, as weights exp((z - zmax) / T) in
 * [0, 1] with the most likely token at exactly 1: every filter compares
 * ratios of probabilities, so the softmax denominator is needed only as a
 * sum over what remains. */
#include "engine/sampler.h"

#include <math.h>
#include <stddef.h>

#include "core/error.h"
#include "core/memory.h"
#include "kernels/argmax.h"

struct moe_sampler {
    moe_sampler_config cfg;
    int vocab;
    uint64_t rng[4];  /* xoshiro256** state */
    int32_t *ids;     /* [vocab] usable token ids, in id order */
    int32_t *top;     /* [vocab] the top-k heap, then the k best, best first */
    float *w;         /* [vocab] weights of the current candidate list */
};

/* ---- the generator: splitmix64 to seed, xoshiro256** to draw ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* ---- ordering: more likely first, equal logits by lower id ---- */

/* Is token a ahead of token b? Both logits are non-NaN, so this is a strict
 * total order and every selection below is deterministic. */
static inline int ahead(const float *z, int32_t a, int32_t b)
{
    return z[a] > z[b] || (z[a] == z[b] && a < b);
}

/* Restores the heap below i; the root is the token every other is ahead of
 * (the one to drop first). */
static void sift_down(const float *z, int32_t *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, last = i;
        if (l < n && ahead(z, h[last], h[l])) last = l;
        if (r < n && ahead(z, h[last], h[r])) last = r;
        if (last == i) return;
        int32_t t = h[i];
        h[i] = h[last];
        h[last] = t;
        i = last;
    }
}

/* The k best usable tokens of z[0..vocab) (fewer when fewer are usable)
 * into out, best first; returns their count. One pass with a heap of k:
 * tokens arrive in id order, so once the heap is full a token enters only
 * if its logit beats the root's, one comparison for nearly every token. */
static int select_top_k(const float *z, int vocab, int k, int32_t *out)
{
    int m = 0;
    for (int i = 0; i < vocab; i++) {
        if (m == k) {
            if (z[i] > z[out[0]]) {  /* false for NaN and -inf */
                out[0] = i;
                sift_down(z, out, m, 0);
            }
        } else if (z[i] > -INFINITY) {
            int j = m++;
            out[j] = i;
            while (j > 0 && ahead(z, out[(j - 1) / 2], out[j])) {  /* sift up */
                int32_t t = out[j];
                out[j] = out[(j - 1) / 2];
                out[(j - 1) / 2] = t;
                j = (j - 1) / 2;
            }
        }
    }
    /* Heapsort: the root is the last in order, so it moves to the end. */
    for (int end = m - 1; end > 0; end--) {
        int32_t t = out[0];
        out[0] = out[end];
        out[end] = t;
        sift_down(z, out, end, 0);
    }
    return m;
}

/* exp((z - zmax) / T): the probability relative to the most likely token.
 * Dividing (not multiplying by 1/T) keeps the top token at exactly 1 even
 * when 1/T overflows. Under a +inf logit the +inf tokens share everything. */
static inline float weight(float z, float zmax, float t)
{
    if (zmax == INFINITY) return z == INFINITY ? 1.0f : 0.0f;
    return expf((z - zmax) / t);
}

/* Nucleus over a list sorted best first: how many of the leading weights it
 * takes for their sum to reach target (at least one). */
static int nucleus_count(const float *w, int n, double target)
{
    double cum = 0;
    int kept = 0;
    while (kept < n && (kept == 0 || cum < target)) cum += w[kept++];
    return kept;
}

static inline void swap_at(int32_t *a, float *w, int i, int j)
{
    int32_t t = a[i];
    a[i] = a[j];
    a[j] = t;
    float u = w[i];
    w[i] = w[j];
    w[j] = u;
}

/* Nucleus over an unsorted list a[0..n) with weights w (moved along with
 * it): moves the best tokens whose weights first reach target to the front,
 * in no particular order, and returns how many (at least one; n when
 * rounding leaves the whole list short). A quickselect that keeps the side
 * holding the boundary: O(n) expected, where sorting the list first would be
 * O(n log n) and the nucleus of a flat distribution can be most of it.
 * Invariant: a[0..lo) are the lo best tokens, their sum is target - need
 * (short of target), and the boundary token lies in a[lo..hi). */
static int nucleus_select(const float *z, int32_t *a, float *w, int n, double target)
{
    int lo = 0, hi = n;
    double need = target;
    while (lo < hi) {
        /* Median of three as the pivot, parked at hi - 1. */
        int mid = lo + (hi - lo) / 2, last = hi - 1;
        if (ahead(z, a[mid], a[lo])) swap_at(a, w, mid, lo);
        if (ahead(z, a[last], a[lo])) swap_at(a, w, last, lo);
        if (ahead(z, a[last], a[mid])) swap_at(a, w, last, mid);
        swap_at(a, w, mid, last);
        const int32_t pivot = a[last];
        /* The tokens ahead of the pivot to the front of [lo, hi), with
         * their sum. Without branches: which side a token falls on is a coin
         * toss the branch predictor would lose half the time. [lo, i) holds
         * those ahead, [i, j) the others, so always swapping j with i and
         * advancing i only past a token ahead keeps both in place. */
        const float zp = z[pivot];
        int i = lo;
        double sum = 0;
        for (int j = lo; j < last; j++) {
            const int32_t x = a[j];
            const float wx = w[j], zx = z[x];
            const int in = (zx > zp) | ((zx == zp) & (x < pivot));
            a[j] = a[i];
            w[j] = w[i];
            a[i] = x;
            w[i] = wx;
            sum += in ? wx : 0.0f;
            i += in;
        }
        swap_at(a, w, i, last);
        if (i > lo && sum >= need) {
            hi = i;                  /* the boundary is ahead of the pivot */
        } else if (sum + w[i] >= need) {
            return i + 1;            /* the pivot is the boundary */
        } else {
            need -= sum + w[i];      /* all of them and the pivot are in */
            lo = i + 1;
        }
    }
    return hi;
}

moe_sampler_config moe_sampler_default_config(void)
{
    moe_sampler_config c = { .temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f, .seed = 0 };
    return c;
}

moe_status moe_sampler_create(const moe_sampler_config *cfg, int vocab, moe_sampler **out)
{
    if (out) *out = NULL;
    if (!cfg || !out) return moe_error_set(MOE_ERR_INVALID_ARG, "sampler: cfg and out must not be NULL");
    if (!(isfinite(cfg->temperature) && cfg->temperature >= 0.0f))
        return moe_error_set(MOE_ERR_INVALID_ARG, "sampler: temperature %g must be finite and >= 0",
                             (double)cfg->temperature);
    if (cfg->top_k < 0)
        return moe_error_set(MOE_ERR_INVALID_ARG, "sampler: top_k %d must be >= 0 (0: off)", cfg->top_k);
    if (!(cfg->top_p >= 0.0f && cfg->top_p <= 1.0f))
        return moe_error_set(MOE_ERR_INVALID_ARG, "sampler: top_p %g is outside [0, 1]", (double)cfg->top_p);
    if (!(cfg->min_p >= 0.0f && cfg->min_p < 1.0f))
        return moe_error_set(MOE_ERR_INVALID_ARG, "sampler: min_p %g is outside [0, 1)", (double)cfg->min_p);
    if (vocab < 1) return moe_error_set(MOE_ERR_SHAPE, "sampler: vocab %d must be >= 1", vocab);

    moe_sampler *s = moe_calloc(sizeof *s, "the sampler");
    if (!s) return MOE_ERR_NOMEM;
    s->cfg = *cfg;
    s->vocab = vocab;
    uint64_t x = cfg->seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
    s->ids = moe_alloc(sizeof(int32_t) * (size_t)vocab, "sampler token ids");
    s->top = s->ids ? moe_alloc(sizeof(int32_t) * (size_t)vocab, "sampler top tokens") : NULL;
    s->w = s->top ? moe_alloc(sizeof(float) * (size_t)vocab, "sampler weights") : NULL;
    if (!s->w) {
        moe_sampler_free(s);
        return MOE_ERR_NOMEM;
    }
    *out = s;
    return MOE_OK;
}

int moe_sampler_config_is_greedy(const moe_sampler_config *cfg) { return cfg && cfg->temperature == 0.0f; }

int moe_sampler_is_greedy(const moe_sampler *s) { return s && moe_sampler_config_is_greedy(&s->cfg); }

int moe_sampler_sample(moe_sampler *s, const float *logits)
{
    if (!s || !logits) {
        moe_error_set(MOE_ERR_INVALID_ARG, "sampler: s and logits must not be NULL");
        return -1;
    }
    const moe_sampler_config *c = &s->cfg;
    const float t = c->temperature;
    if (t == 0.0f) return moe_argmax_f32(logits, s->vocab);

    /* One number per call, whatever the logits and filters, so that the
     * stream of draws does not depend on them. */
    const uint64_t r = xoshiro_next(s->rng);

    // the usable tokens: with top-k the k best, sorted; else all, in id order
    int32_t *list;
    int n = 0, sorted = c->top_k > 0;
    float zmax = -INFINITY;
    if (sorted) {
        list = s->top;
        n = select_top_k(logits, s->vocab, c->top_k, list);
        if (n > 0) zmax = logits[list[0]];
    } else {
        list = s->ids;
        for (int i = 0; i < s->vocab; i++) {
            float z = logits[i];
            if (!(z > -INFINITY)) continue;  /* NaN or -inf */
            list[n++] = i;
            if (z > zmax) zmax = z;
        }
    }
    if (n == 0) return 0;

    float *w = s->w;
    double total = 0;
    for (int j = 0; j < n; j++) total += (w[j] = weight(logits[list[j]], zmax, t));
    int filtered = 0;  /* whether total must be summed again */

    // top-p on what top-k left
    if (c->top_p > 0.0f && c->top_p < 1.0f) {
        const double target = (double)c->top_p * total;
        filtered = 1;
        if (sorted)
            n = nucleus_count(w, n, target);
        else
            n = nucleus_select(logits, list, w, n, target);
    }

    // min-p: relative to the most likely token left (weight 1, as it is the maximum)
    if (c->min_p > 0.0f) {
        float wmax = 0.0f;
        for (int j = 0; j < n; j++)
            if (w[j] > wmax) wmax = w[j];
        const float floor_w = c->min_p * wmax;
        filtered = 1;
        int kept = 0;
        for (int j = 0; j < n; j++)
            if (w[j] >= floor_w) {
                list[kept] = list[j];
                w[kept++] = w[j];
            }
        n = kept;
    }

    // one draw from what remains, renormalised
    if (filtered) {
        total = 0;
        for (int j = 0; j < n; j++) total += w[j];
    }
    const double u = (double)(r >> 11) * (1.0 / 9007199254740992.0) * total;
    double cum = 0;
    int pick = list[0];
    for (int j = 0; j < n; j++) {
        if (w[j] > 0.0f) pick = list[j];
        cum += w[j];
        if (u < cum) return list[j];
    }
    return pick;  /* only when u * total rounded up to total */
}

void moe_sampler_free(moe_sampler *s)
{
    if (!s) return;
    moe_free(s->ids);
    moe_free(s->top);
    moe_free(s->w);
    moe_free(s);
}
