/* engine/generate.h — engine/generate.c is public API: moe/generate.h
 * declares it. */
#ifndef MOE_ENGINE_GENERATE_H
#define MOE_ENGINE_GENERATE_H

#include "moe/generate.h"

#endif
