// The one exception type of the decoder: any rule of docs/FORMAT.md that a blob breaks.
#pragma once
#include <stdexcept>

namespace fq {

class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace fq
