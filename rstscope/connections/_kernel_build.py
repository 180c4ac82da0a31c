"""cffi build script of the compiled event loop (``event_loop.c``), run by setuptools at install
(``cffi_modules`` in setup.py): it makes the extension module ``rstscope.connections._kernel``."""

from pathlib import Path

from cffi import FFI

SOURCE = Path(__file__).with_name("event_loop.c").read_text()
ffibuilder = FFI()
ffibuilder.cdef(SOURCE.split("/* cdef begin */")[1].split("/* cdef end */")[0])
ffibuilder.set_source("rstscope.connections._kernel", SOURCE, extra_compile_args=["-O2"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
