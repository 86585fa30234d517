# Download Debian trixie's libonnxruntime-dev (onnxruntime 1.21.0) and unpack only its headers
# into <cache>/include/onnxruntime. Used by FindOrtHeaders.cmake when no headers are installed.
#
# Preferred route: apt-get with a private state directory (nothing on the machine changes) and a
# one-line sources.list naming trixie on the mirror this machine already uses; apt checks the
# archive signature. Fallback when apt-get is missing or fails: the same .deb straight from the
# mirror's pool, accepted only if its SHA-256 matches the pinned value below.

set(_fq_deb_pool "pool/main/o/onnxruntime/libonnxruntime-dev_1.21.0+dfsg-1_amd64.deb")
set(_fq_deb_sha256 "14f7d959d5deacbcf1504830d4189f91fc67382b399ed9ae9d3aa9c4050ced08")
set(_fq_default_mirror "http://deb.debian.org/debian")

# The Debian mirror this machine's apt is configured with (one-line and deb822 formats).
function(_fq_debian_mirror out)
  set(_files "")
  if(EXISTS /etc/apt/sources.list)
    list(APPEND _files /etc/apt/sources.list)
  endif()
  file(GLOB _more /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
  list(APPEND _files ${_more})
  foreach(f IN LISTS _files)
    file(STRINGS "${f}" _lines)
    foreach(line IN LISTS _lines)
      string(STRIP "${line}" line)
      if(line MATCHES "^#")
        continue()
      endif()
      set(_uris "")
      if(line MATCHES "^deb[ \t]")
        # "deb [options] URI suite components"
        string(REGEX REPLACE "\\[[^]]*\\]" "" line "${line}")
        string(REGEX MATCH "(https?|ftp)://[^ \t]+" _uris "${line}")
      elseif(line MATCHES "^URIs:")
        string(REGEX REPLACE "^URIs:[ \t]*" "" _uris "${line}")
        string(REPLACE " " ";" _uris "${_uris}")
      endif()
      foreach(u IN LISTS _uris)
        string(REGEX REPLACE "/+$" "" u "${u}")
        # The main archive, not debian-security / debian-ports / third-party repositories.
        if(u MATCHES "^https?://.*/debian$")
          set(${out} "${u}" PARENT_SCOPE)
          return()
        endif()
      endforeach()
    endforeach()
  endforeach()
  set(${out} "${_fq_default_mirror}" PARENT_SCOPE)
endfunction()

# Unpacks a .deb (an ar archive holding data.tar.*) into dest.
function(_fq_unpack_deb deb dest ok)
  set(${ok} FALSE PARENT_SCOPE)
  find_program(_fq_dpkg_deb dpkg-deb)
  file(MAKE_DIRECTORY "${dest}")
  if(_fq_dpkg_deb)
    execute_process(COMMAND "${_fq_dpkg_deb}" -x "${deb}" "${dest}" RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
    if(rc EQUAL 0)
      set(${ok} TRUE PARENT_SCOPE)
      return()
    endif()
  endif()
  # CMake's bundled libarchive reads ar archives too.
  set(_ar "${dest}.ar")
  file(MAKE_DIRECTORY "${_ar}")
  execute_process(COMMAND "${CMAKE_COMMAND}" -E tar xf "${deb}" WORKING_DIRECTORY "${_ar}" RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
  file(GLOB _data "${_ar}/data.tar*")
  if(rc EQUAL 0 AND _data)
    execute_process(COMMAND "${CMAKE_COMMAND}" -E tar xf "${_data}" WORKING_DIRECTORY "${dest}" RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
    if(rc EQUAL 0)
      set(${ok} TRUE PARENT_SCOPE)
    endif()
  endif()
endfunction()

function(fq_fetch_ort_headers cache_dir error_out)
  set(${error_out} "" PARENT_SCOPE)
  _fq_debian_mirror(_mirror)
  string(RANDOM LENGTH 8 _tag)
  set(_work "${cache_dir}.tmp-${_tag}")
  file(REMOVE_RECURSE "${_work}")
  file(MAKE_DIRECTORY "${_work}/etc" "${_work}/lists/partial" "${_work}/cache/archives/partial" "${_work}/deb")
  message(STATUS "fq-onnx: fetching onnxruntime 1.21 headers (Debian trixie libonnxruntime-dev) from ${_mirror}")

  set(_deb "")
  set(_why "")
  find_program(_fq_apt_get apt-get)
  if(_fq_apt_get)
    file(WRITE "${_work}/etc/sources.list" "deb ${_mirror} trixie main\n")
    set(_apt "${_fq_apt_get}" -q
      -o "Dir::Etc::SourceList=${_work}/etc/sources.list"
      -o "Dir::Etc::SourceParts=/dev/null"
      -o "Dir::State::Lists=${_work}/lists"
      -o "Dir::Cache=${_work}/cache"
      -o "APT::Sandbox::User=root"
      -o "Debug::NoLocking=true")
    execute_process(COMMAND ${_apt} update
      RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 600)
    if(rc EQUAL 0)
      execute_process(COMMAND ${_apt} download libonnxruntime-dev
        WORKING_DIRECTORY "${_work}/deb"
        RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 600)
      file(GLOB _deb "${_work}/deb/libonnxruntime-dev_*.deb")
      if(NOT rc EQUAL 0 OR NOT _deb)
        set(_why "apt-get download libonnxruntime-dev failed (${rc}): ${err}")
        set(_deb "")
      endif()
    else()
      set(_why "apt-get update for '${_mirror} trixie main' failed (${rc}): ${err}")
    endif()
  else()
    set(_why "apt-get not found")
  endif()

  if(NOT _deb)
    message(STATUS "fq-onnx: ${_why}; trying the pinned .deb from the mirror's pool")
    set(_deb "${_work}/deb/libonnxruntime-dev.deb")
    file(DOWNLOAD "${_mirror}/${_fq_deb_pool}" "${_deb}"
      EXPECTED_HASH SHA256=${_fq_deb_sha256} TIMEOUT 600 STATUS _st)
    list(GET _st 0 _code)
    if(NOT _code EQUAL 0)
      list(GET _st 1 _msg)
      file(REMOVE_RECURSE "${_work}")
      set(${error_out} "${_why}; download of ${_mirror}/${_fq_deb_pool} failed: ${_msg}" PARENT_SCOPE)
      return()
    endif()
  endif()

  _fq_unpack_deb("${_deb}" "${_work}/root" _ok)
  set(_src "${_work}/root/usr/include/onnxruntime")
  if(NOT _ok OR NOT EXISTS "${_src}/onnxruntime_cxx_api.h")
    file(REMOVE_RECURSE "${_work}")
    set(${error_out} "could not unpack the headers from ${_deb}" PARENT_SCOPE)
    return()
  endif()

  # Stage next to the cache and rename, so an interrupted fetch never leaves a half cache.
  get_filename_component(_deb_name "${_deb}" NAME)
  file(MAKE_DIRECTORY "${_work}/stage/include")
  file(COPY "${_src}" DESTINATION "${_work}/stage/include")
  file(WRITE "${_work}/stage/SOURCE.txt" "${_deb_name} from ${_mirror} (Debian trixie), headers only\n")
  get_filename_component(_parent "${cache_dir}" DIRECTORY)
  file(MAKE_DIRECTORY "${_parent}")
  file(REMOVE_RECURSE "${cache_dir}")
  file(RENAME "${_work}/stage" "${cache_dir}" RESULT _rename)
  file(REMOVE_RECURSE "${_work}")
  if(NOT _rename EQUAL 0)
    set(${error_out} "could not move the headers into ${cache_dir}: ${_rename}" PARENT_SCOPE)
  endif()
endfunction()
