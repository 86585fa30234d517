from fq_onnx.cli import main

main()
