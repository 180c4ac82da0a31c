"""cffi build script of the reader's compiled loops (``walk.c``, the pcap record walk; ``records.c``,
rows of the packet table written in one pass; ``plain.c``, plain frames decoded in one pass), run by
setuptools at install (``cffi_modules`` in setup.py): it makes the extension module
``rstscope.reader._compiled``."""

from pathlib import Path

from cffi import FFI

SOURCES = [Path(__file__).with_name(name).read_text() for name in ("walk.c", "records.c", "plain.c")]
ffibuilder = FFI()
ffibuilder.cdef("\n".join(source.split("/* cdef begin */")[1].split("/* cdef end */")[0] for source in SOURCES))
ffibuilder.set_source("rstscope.reader._compiled", "\n".join(SOURCES), extra_compile_args=["-O2"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
