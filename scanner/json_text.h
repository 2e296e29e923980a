// Text for the JSON the runtime writes (report files, the settings object):
// no allocation, bounded buffers.
#pragma once
#include <stddef.h>

namespace dedup {

// Appends a JSON string's characters (quotes and backslashes escaped,
// control characters dropped) at buf + *used, keeping 8 bytes of cap spare
// for what the caller closes the value with.
inline void json_put_escaped(char* buf, size_t cap, size_t* used, const char* text) {
    for (const char* c = text; *c && *used + 8 < cap; ++c) {
        if ((unsigned char)*c < 0x20) continue;
        if (*c == '"' || *c == '\\') buf[(*used)++] = '\\';
        buf[(*used)++] = *c;
    }
}

}  // namespace dedup
