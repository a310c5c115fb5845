/* engine/text.h — engine/text.c is public API: moe/text.h
 * declares it. */
#ifndef MOE_ENGINE_TEXT_H
#define MOE_ENGINE_TEXT_H

#include "moe/text.h"

#endif
