// The frame decoder of trine.contract.protocol.FrameDecoder, in C++, for the native bridge.
//
// The bridge only needs to know where frames end (to count complete requests and answers);
// it never interprets them. Every constant comes from protocol.h, which trine.sim.native
// generates from trine.contract.protocol (SYNC, header size, length field, maximum payload,
// the CRC tables computed by the contract's own crc8/crc16), so the protocol stays defined once.
// tests/test_native.py feeds the same random byte streams to this decoder and to the Python one
// and requires the same frames, errors and dropped bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "protocol.h"

namespace trine {

inline uint8_t crc8(const uint8_t* data, size_t n) {
    uint8_t crc = 0;
    for (size_t i = 0; i < n; i++) crc = proto::CRC8_TABLE[crc ^ data[i]];
    return crc;
}

inline uint16_t crc16(const uint8_t* data, size_t n) {
    uint16_t crc = proto::CRC16_INIT;
    for (size_t i = 0; i < n; i++)
        crc = static_cast<uint16_t>((crc << 8) ^ proto::CRC16_TABLE[((crc >> 8) ^ data[i]) & 0xFF]);
    return crc;
}

// Counts what FrameDecoder.feed returns (frames) and appends to (errors: a valid header with a
// bad payload CRC), and the bytes it drops while hunting for SYNC or in rejected headers.
class FrameCounter {
  public:
    struct Result {
        unsigned frames = 0;
        unsigned errors = 0;
    };

    Result feed(const uint8_t* data, size_t n) {
        buf_.insert(buf_.end(), data, data + n);
        Result r;
        while (start_ < buf_.size()) {
            const uint8_t* b = buf_.data() + start_;
            size_t avail = buf_.size() - start_;
            if (b[0] != proto::SYNC) {
                size_t skip = 1;
                while (skip < avail && b[skip] != proto::SYNC) skip++;
                dropped += skip;
                start_ += skip;
                continue;
            }
            if (avail < proto::HEADER_SIZE) break;
            size_t length = b[proto::LENGTH_OFFSET] | (size_t(b[proto::LENGTH_OFFSET + 1]) << 8);
            if (crc8(b + 1, proto::HEADER_SIZE - 2) != b[proto::HEADER_SIZE - 1] ||
                length > proto::MAX_PAYLOAD) {
                dropped += 1;  // hunt again from the byte after this false SYNC
                start_ += 1;
                continue;
            }
            size_t end = proto::HEADER_SIZE + length + proto::TRAILER_SIZE;
            if (avail < end) break;
            uint16_t crc = b[end - 2] | (uint16_t(b[end - 1]) << 8);
            if (crc16(b + 1, end - 3) == crc)
                r.frames++;
            else
                r.errors++;
            start_ += end;
        }
        if (start_ == buf_.size()) {
            buf_.clear();
            start_ = 0;
        } else if (start_ > 4096) {
            buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(start_));
            start_ = 0;
        }
        return r;
    }

    bool in_frame() const { return start_ < buf_.size(); }
    void reset() {
        buf_.clear();
        start_ = 0;
    }

    unsigned long long dropped = 0;

  private:
    std::vector<uint8_t> buf_;
    size_t start_ = 0;
};

}  // namespace trine
