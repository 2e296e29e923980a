// The shim's log line prefix, "libdedup[PID]: ", for the unit tests.
#pragma once
#include <ctype.h>

#include <string>

// The length of the "libdedup[PID]: " prefix at pos in text, 0 if there is none.
inline size_t log_prefix_len(const std::string& text, size_t pos = 0) {
    static const std::string head = "libdedup[";
    if (text.compare(pos, head.size(), head) != 0) return 0;
    size_t i = pos + head.size(), digits = 0;
    while (i < text.size() && isdigit((unsigned char)text[i])) ++i, ++digits;
    if (!digits || text.compare(i, 3, "]: ") != 0) return 0;
    return i + 3 - pos;
}
// The message of a log line ("" if it has no prefix).
inline std::string log_message(const std::string& line) {
    size_t n = log_prefix_len(line);
    return n ? line.substr(n) : std::string();
}
