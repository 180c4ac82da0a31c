"""cffi build script of the compiled pcap record walk (``walk.c``), run by setuptools at install
(``cffi_modules`` in setup.py): it makes the extension module ``rstscope.reader._walk``."""

from pathlib import Path

from cffi import FFI

SOURCE = Path(__file__).with_name("walk.c").read_text()
ffibuilder = FFI()
ffibuilder.cdef(SOURCE.split("/* cdef begin */")[1].split("/* cdef end */")[0])
ffibuilder.set_source("rstscope.reader._walk", SOURCE, extra_compile_args=["-O2"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
