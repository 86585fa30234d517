"""The byte format of one compressed weight tensor (docs/FORMAT.md): ``fmt`` (the blob: header,
level set, scales) and ``codec`` (zero-run tokens, canonical Huffman). The C++ twin is
custom_ops/src (decode.cc, huffman.cc)."""
