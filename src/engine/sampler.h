/* engine/sampler.h — the sampler (engine/sampler.c) is public API:
 * moe/sampler.h declares it. */
#ifndef MOE_ENGINE_SAMPLER_H
#define MOE_ENGINE_SAMPLER_H

#include "moe/sampler.h"

#endif
