// Runs a model compressed by fq-onnx from a C++ host: registers libfq_onnx_ops.so through
// onnxruntime's C++ API, feeds the model's first input from a .npy file and writes its first
// output to another .npy file.
//
//   fq_onnx_run MODEL.onnx LIBRARY.so INPUT.npy OUTPUT.npy [THREADS]
//
// Only float32, C-ordered .npy files (what numpy.save writes for a float32 array) are read.
#include <onnxruntime_cxx_api.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Array {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// The .npy header is a Python dict literal, e.g. {'descr': '<f4', 'fortran_order': False,
// 'shape': (1, 1, 8, 8), }: only the three keys this program needs are looked at.
Array read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  char magic[8];
  if (!in.read(magic, 8) || std::string(magic, 6) != "\x93NUMPY") throw std::runtime_error(path + ": not a .npy file");
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    in.read(reinterpret_cast<char*>(b), 2);
    header_len = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    in.read(reinterpret_cast<char*>(b), 4);
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  }
  if (!in || header_len > (1u << 20)) throw std::runtime_error(path + ": bad .npy header");
  std::string header(header_len, '\0');
  if (!in.read(&header[0], header_len)) throw std::runtime_error(path + ": truncated .npy header");
  if (header.find("'descr': '<f4'") == std::string::npos)
    throw std::runtime_error(path + ": only float32 ('<f4') arrays are supported");
  if (header.find("'fortran_order': False") == std::string::npos)
    throw std::runtime_error(path + ": only C-ordered arrays are supported");
  size_t open = header.find("'shape': (");
  size_t close = header.find(')', open);
  if (open == std::string::npos || close == std::string::npos) throw std::runtime_error(path + ": no shape");
  Array a;
  std::stringstream dims(header.substr(open + 10, close - open - 10));
  std::string item;
  size_t count = 1;
  while (std::getline(dims, item, ',')) {
    if (item.find_first_not_of(' ') == std::string::npos) continue;
    int64_t d = std::stoll(item);
    if (d < 0 || d > (int64_t{1} << 31)) throw std::runtime_error(path + ": bad dimension");
    a.shape.push_back(d);
    count *= static_cast<size_t>(d);
  }
  a.data.resize(count);
  if (!in.read(reinterpret_cast<char*>(a.data.data()), static_cast<std::streamsize>(count * sizeof(float))))
    throw std::runtime_error(path + ": truncated data");
  return a;
}

void write_npy(const std::string& path, const std::vector<int64_t>& shape, const float* data, size_t count) {
  std::string dims;
  for (int64_t d : shape) dims += std::to_string(d) + ", ";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  header.append(63 - (10 + header.size()) % 64, ' ');  // magic + length + header + '\n' = k * 64
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  const uint16_t len = static_cast<uint16_t>(header.size());
  out.write("\x93NUMPY\x01\x00", 8);
  out.put(static_cast<char>(len & 0xff)).put(static_cast<char>(len >> 8));
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(count * sizeof(float)));
  if (!out) throw std::runtime_error(path + ": cannot write");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5 || argc > 6) {
    std::cerr << "usage: " << argv[0] << " MODEL.onnx LIBRARY.so INPUT.npy OUTPUT.npy [THREADS]\n";
    return 2;
  }
  try {
    const std::string threads = argc == 6 ? argv[5] : "1";
    Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "fq_onnx_run");
    Ort::SessionOptions options;
    options.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    options.SetIntraOpNumThreads(std::stoi(threads));
    // A custom op cannot query the session's thread count: tell the library, before registering.
    options.AddConfigEntry("fq_onnx.threads", threads.c_str());
    options.RegisterCustomOpsLibrary(argv[2]);
    Ort::Session session(env, argv[1], options);

    Array input = read_npy(argv[3]);
    Ort::AllocatorWithDefaultOptions allocator;
    auto input_name = session.GetInputNameAllocated(0, allocator);
    auto output_name = session.GetOutputNameAllocated(0, allocator);
    auto memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    Ort::Value x = Ort::Value::CreateTensor<float>(memory, input.data.data(), input.data.size(),
                                                   input.shape.data(), input.shape.size());
    const char* in_names[] = {input_name.get()};
    const char* out_names[] = {output_name.get()};
    auto outputs = session.Run(Ort::RunOptions{nullptr}, in_names, &x, 1, out_names, 1);

    auto info = outputs[0].GetTensorTypeAndShapeInfo();
    if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
      throw std::runtime_error("the model's first output is not float32");
    write_npy(argv[4], info.GetShape(), outputs[0].GetTensorData<float>(), info.GetElementCount());
    std::cout << "wrote " << argv[4] << " (" << info.GetElementCount() << " floats)\n";
  } catch (const std::exception& e) {
    std::cerr << "fq_onnx_run: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
