// frames.h on its own, for tests/test_native.py: reads bytes on stdin, feeds them to
// trine::FrameCounter in pieces of argv[1] bytes, and prints "frames errors dropped in_frame".
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "frames.h"

int main(int argc, char** argv) {
    const size_t piece = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 1;
    std::vector<uint8_t> data;
    for (int c; (c = std::getchar()) != EOF;) data.push_back(uint8_t(c));
    trine::FrameCounter counter;
    unsigned long frames = 0, errors = 0;
    for (size_t i = 0; i < data.size(); i += piece) {
        size_t n = data.size() - i < piece ? data.size() - i : piece;
        auto r = counter.feed(data.data() + i, n);
        frames += r.frames;
        errors += r.errors;
    }
    std::printf("%lu %lu %llu %d\n", frames, errors, counter.dropped, counter.in_frame() ? 1 : 0);
    return 0;
}
