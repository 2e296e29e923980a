// Text for the JSON the runtime writes (report files, the settings object):
// no allocation, one bounded buffer.
#pragma once
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

namespace dedup {

// Appends to buf[0, cap). Once a piece does not fit, the rest is dropped and
// finish() says 0: the caller writes nothing rather than half an object.
class JsonOut {
public:
    JsonOut(char* buf, size_t cap) : buf_(buf), cap_(cap) {
        if (cap) buf[0] = 0;
    }

    void put(const char* fmt, ...) __attribute__((format(printf, 2, 3))) {
        if (used_ >= cap_) return;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(buf_ + used_, cap_ - used_, fmt, ap);
        va_end(ap);
        used_ = n < 0 ? cap_ : used_ + (size_t)n;
    }

    // A JSON string's characters: quotes and backslashes escaped, control
    // characters dropped; 8 bytes of cap kept for what closes the value.
    void escaped(const char* text) {
        for (const char* c = text; *c && used_ + 8 < cap_; ++c) {
            if ((unsigned char)*c < 0x20) continue;
            if (*c == '"' || *c == '\\') buf_[used_++] = '\\';
            buf_[used_++] = *c;
        }
    }

    // For a writer of its own (it returns what it wrote, 0 if it did not fit).
    char* end() const { return buf_ + used_; }
    size_t room() const { return used_ < cap_ ? cap_ - used_ : 0; }
    void advance(size_t n) { used_ += n; }

    size_t used() const { return used_; }
    char last() const { return used_ && used_ <= cap_ ? buf_[used_ - 1] : 0; }

    // The length written, or 0 (and an empty string) if anything was cut.
    size_t finish() {
        if (used_ < cap_) return used_;
        if (cap_) buf_[0] = 0;
        return 0;
    }

private:
    char* buf_;
    size_t cap_;
    size_t used_ = 0;
};

}  // namespace dedup
