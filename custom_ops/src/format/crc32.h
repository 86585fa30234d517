// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), the checksum zlib.crc32 computes.
#pragma once
#include <cstddef>
#include <cstdint>

namespace fq {

uint32_t crc32(const uint8_t* data, size_t size);

}  // namespace fq
