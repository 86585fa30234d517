// RegisterCustomOps, the entry point onnxruntime calls (see exports.map; c_api.cc has the others).
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "op/ort_api.h"
#include "op/shiftconv_op.h"

namespace {

// Domains and ops must outlive every session that registered them, and onnxruntime never tells
// us when that is: keep them for the life of the process (a few hundred bytes per registration).
std::mutex g_mutex;
std::vector<std::unique_ptr<fq::ShiftConvOp>> g_ops;
std::vector<OrtCustomOpDomain*> g_domains;

std::string session_config(const OrtApi& api, const OrtSessionOptions* options, const char* key) {
  int has = 0;
  OrtStatus* st = api.HasSessionConfigEntry(options, key, &has);
  if (st) {
    api.ReleaseStatus(st);
    return "";
  }
  if (!has) return "";
  size_t size = 0;
  st = api.GetSessionConfigEntry(options, key, nullptr, &size);
  if (st) {
    api.ReleaseStatus(st);
    return "";
  }
  std::string v(size, '\0');
  st = api.GetSessionConfigEntry(options, key, &v[0], &size);
  if (st) {
    api.ReleaseStatus(st);
    return "";
  }
  v.resize(size > 0 ? size - 1 : 0);
  return v;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  if (api_base == nullptr) return nullptr;
  const OrtApi* api = api_base->GetApi(fq::kOrtApiVersion);
  if (api == nullptr) {
    // Too old a runtime for our API version; version 1 of the API can still report it.
    const OrtApi* v1 = api_base->GetApi(1);
    const std::string msg = std::string("libfq_onnx_ops.so needs onnxruntime >= 1.21 (C API version ") +
                            std::to_string(fq::kOrtApiVersion) + "), but this onnxruntime is " +
                            api_base->GetVersionString();
    return v1 ? v1->CreateStatus(ORT_FAIL, msg.c_str()) : nullptr;
  }
  Ort::InitApi(api);
  try {
    // Session config entries "fq_onnx.kernel" (auto|scalar|avx2|avx512: the microkernels) and
    // "fq_onnx.dense" (auto|own|ort|nchw|nchwc: who runs dense layers) apply to the sessions
    // built from these options; set them before registering the library.
    const std::string choice = session_config(*api, options, "fq_onnx.kernel");
    const std::string dense = session_config(*api, options, "fq_onnx.dense");
    // "fq_onnx.threads": the session's intra-op threads (fq_onnx.runtime sets it; a custom op
    // cannot query them). Absent or invalid: one per CPU the process may use.
    const std::string threads = session_config(*api, options, "fq_onnx.threads");
    std::lock_guard<std::mutex> lock(g_mutex);
    auto op = std::make_unique<fq::ShiftConvOp>(choice, dense, std::atoll(threads.c_str()));
    OrtCustomOpDomain* domain = nullptr;
    if (OrtStatus* st = api->CreateCustomOpDomain("fq_onnx", &domain)) return st;
    if (OrtStatus* st = api->CustomOpDomain_Add(domain, op.get())) {
      api->ReleaseCustomOpDomain(domain);
      return st;
    }
    if (OrtStatus* st = api->AddCustomOpDomain(options, domain)) {
      api->ReleaseCustomOpDomain(domain);
      return st;
    }
    g_ops.push_back(std::move(op));
    g_domains.push_back(domain);
    return nullptr;
  } catch (const std::exception& e) {
    return api->CreateStatus(ORT_FAIL, (std::string("fq_onnx: registering ShiftConv failed: ") + e.what()).c_str());
  }
}
