# Locate onnxruntime's C/C++ API headers (onnxruntime_cxx_api.h and friends).
#
# The custom-op library needs only headers: it is loaded into an onnxruntime that is already
# running (the pip wheel, which ships no headers) and gets the API table from RegisterCustomOps.
# Search order, first hit wins:
#   1. an explicit path: -DFQ_ONNX_ORT_INCLUDE_DIR=... or the environment variable of that name
#      (a wrong explicit path is an error, never silently skipped);
#   2. system include directories (Debian's libonnxruntime-dev installs /usr/include/onnxruntime);
#   3. the local cache FQ_ONNX_ORT_CACHE_DIR (default ~/.cache/fq-onnx/ort-headers-1.21);
#   4. download Debian trixie's libonnxruntime-dev through the machine's apt sources and unpack
#      only its headers into that cache (cmake/FetchOrtHeaders.cmake). FQ_ONNX_ORT_FETCH=OFF
#      (or the environment variable FQ_ONNX_ORT_FETCH=0) disables this step.
# Headers must declare ORT_API_VERSION >= FQ_ONNX_ORT_API_MIN; the library asks the runtime for
# exactly that version, so newer headers work too.
#
# Result: ORT_INCLUDE_DIR (directory containing onnxruntime_cxx_api.h) and ORT_HEADERS_FOUND_BY.

set(FQ_ONNX_ORT_API_MIN 21)
set(_fq_ort_deb_version "1.21")

# Reads ORT_API_VERSION from a header directory into OUT (empty when absent or unreadable).
function(_fq_ort_api_version dir out)
  set(_v "")
  if(EXISTS "${dir}/onnxruntime_c_api.h" AND EXISTS "${dir}/onnxruntime_cxx_api.h")
    file(STRINGS "${dir}/onnxruntime_c_api.h" _line REGEX "^#define ORT_API_VERSION [0-9]+")
    if(_line)
      string(REGEX REPLACE "^#define ORT_API_VERSION ([0-9]+).*" "\\1" _v "${_line}")
    endif()
  endif()
  set(${out} "${_v}" PARENT_SCOPE)
endfunction()

# Accepts either the header directory itself or a prefix with include/onnxruntime below it.
function(_fq_ort_check_dir candidate out_dir out_version)
  set(${out_dir} "" PARENT_SCOPE)
  set(${out_version} "" PARENT_SCOPE)
  foreach(sub "" "/onnxruntime" "/include/onnxruntime" "/include")
    _fq_ort_api_version("${candidate}${sub}" _v)
    if(_v)
      set(${out_dir} "${candidate}${sub}" PARENT_SCOPE)
      set(${out_version} "${_v}" PARENT_SCOPE)
      return()
    endif()
  endforeach()
endfunction()

set(_fq_explicit "${FQ_ONNX_ORT_INCLUDE_DIR}")
if(NOT _fq_explicit AND DEFINED ENV{FQ_ONNX_ORT_INCLUDE_DIR})
  set(_fq_explicit "$ENV{FQ_ONNX_ORT_INCLUDE_DIR}")
endif()

if(NOT DEFINED FQ_ONNX_ORT_CACHE_DIR)
  if(DEFINED ENV{FQ_ONNX_ORT_CACHE_DIR})
    set(FQ_ONNX_ORT_CACHE_DIR "$ENV{FQ_ONNX_ORT_CACHE_DIR}")
  elseif(DEFINED ENV{XDG_CACHE_HOME} AND NOT "$ENV{XDG_CACHE_HOME}" STREQUAL "")
    set(FQ_ONNX_ORT_CACHE_DIR "$ENV{XDG_CACHE_HOME}/fq-onnx/ort-headers-${_fq_ort_deb_version}")
  else()
    set(FQ_ONNX_ORT_CACHE_DIR "$ENV{HOME}/.cache/fq-onnx/ort-headers-${_fq_ort_deb_version}")
  endif()
endif()

set(ORT_INCLUDE_DIR "")
set(ORT_HEADERS_FOUND_BY "")
set(_fq_report "")

# 1. Explicit path.
if(_fq_explicit)
  _fq_ort_check_dir("${_fq_explicit}" _dir _ver)
  if(NOT _dir)
    message(FATAL_ERROR
      "FQ_ONNX_ORT_INCLUDE_DIR='${_fq_explicit}' does not contain onnxruntime_c_api.h and "
      "onnxruntime_cxx_api.h (looked in it and in its onnxruntime/, include/onnxruntime/ and "
      "include/ subdirectories). Point it at the directory holding those headers, or unset it.")
  endif()
  if(_ver LESS FQ_ONNX_ORT_API_MIN)
    message(FATAL_ERROR
      "FQ_ONNX_ORT_INCLUDE_DIR='${_dir}' has onnxruntime headers with ORT_API_VERSION ${_ver}; "
      "fq-onnx needs ${FQ_ONNX_ORT_API_MIN} or newer (onnxruntime >= 1.21).")
  endif()
  set(ORT_INCLUDE_DIR "${_dir}")
  set(ORT_HEADERS_FOUND_BY "explicit path")
endif()

# 2. System include directories.
if(NOT ORT_INCLUDE_DIR)
  find_path(_fq_sys_ort onnxruntime_cxx_api.h
    PATH_SUFFIXES onnxruntime onnxruntime/core/session include/onnxruntime
    NO_CACHE)
  if(_fq_sys_ort)
    _fq_ort_check_dir("${_fq_sys_ort}" _dir _ver)
    if(_dir AND NOT _ver LESS FQ_ONNX_ORT_API_MIN)
      set(ORT_INCLUDE_DIR "${_dir}")
      set(ORT_HEADERS_FOUND_BY "system include directory")
    else()
      string(APPEND _fq_report "\n  - system headers in ${_fq_sys_ort} have ORT_API_VERSION '${_ver}' (< ${FQ_ONNX_ORT_API_MIN})")
    endif()
  else()
    string(APPEND _fq_report "\n  - no onnxruntime_cxx_api.h in the system include directories")
  endif()
endif()

# 3. Local cache.
set(_fq_cache_headers "${FQ_ONNX_ORT_CACHE_DIR}/include/onnxruntime")
if(NOT ORT_INCLUDE_DIR)
  _fq_ort_check_dir("${_fq_cache_headers}" _dir _ver)
  if(_dir AND NOT _ver LESS FQ_ONNX_ORT_API_MIN)
    set(ORT_INCLUDE_DIR "${_dir}")
    set(ORT_HEADERS_FOUND_BY "cache ${FQ_ONNX_ORT_CACHE_DIR}")
  else()
    string(APPEND _fq_report "\n  - no usable headers in the cache ${_fq_cache_headers}")
  endif()
endif()

# 4. Fetch Debian's libonnxruntime-dev into the cache.
set(_fq_fetch ON)
if(DEFINED FQ_ONNX_ORT_FETCH)
  set(_fq_fetch ${FQ_ONNX_ORT_FETCH})
elseif(DEFINED ENV{FQ_ONNX_ORT_FETCH})
  set(_fq_fetch $ENV{FQ_ONNX_ORT_FETCH})
endif()
if(NOT ORT_INCLUDE_DIR)
  if(_fq_fetch)
    include(FetchOrtHeaders)
    fq_fetch_ort_headers("${FQ_ONNX_ORT_CACHE_DIR}" _fq_fetch_error)
    _fq_ort_check_dir("${_fq_cache_headers}" _dir _ver)
    if(_dir AND NOT _ver LESS FQ_ONNX_ORT_API_MIN)
      set(ORT_INCLUDE_DIR "${_dir}")
      set(ORT_HEADERS_FOUND_BY "downloaded Debian libonnxruntime-dev into ${FQ_ONNX_ORT_CACHE_DIR}")
    else()
      string(APPEND _fq_report "\n  - fetching Debian trixie's libonnxruntime-dev failed: ${_fq_fetch_error}")
    endif()
  else()
    string(APPEND _fq_report "\n  - downloading Debian's libonnxruntime-dev is disabled (FQ_ONNX_ORT_FETCH=OFF)")
  endif()
endif()

if(NOT ORT_INCLUDE_DIR)
  message(FATAL_ERROR
    "fq-onnx needs onnxruntime's C/C++ API headers (onnxruntime_c_api.h, onnxruntime_cxx_api.h; "
    "version 1.21 or newer) to build its custom-op library, and found none:${_fq_report}\n"
    "Provide one of:\n"
    "  * FQ_ONNX_ORT_INCLUDE_DIR=/path/to/dir/with/onnxruntime_cxx_api.h in the environment of "
    "`pip install` (e.g. the include/ directory of an onnxruntime release archive), or\n"
    "  * the system package: apt-get install libonnxruntime-dev (Debian trixie / Ubuntu 25.04 or "
    "newer), or\n"
    "  * the unpacked headers in ${_fq_cache_headers}/")
endif()

_fq_ort_api_version("${ORT_INCLUDE_DIR}" ORT_HEADERS_API_VERSION)
message(STATUS "onnxruntime headers: ${ORT_INCLUDE_DIR} (ORT_API_VERSION ${ORT_HEADERS_API_VERSION}, ${ORT_HEADERS_FOUND_BY})")
