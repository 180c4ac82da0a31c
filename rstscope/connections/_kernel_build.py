"""cffi build script of the compiled loops (``event_loop.c``, the event pass; ``sequence_loop.c``, the
sequence pass), run by setuptools at install (``cffi_modules`` in setup.py): it makes the extension
module ``rstscope.connections._kernel``."""

from pathlib import Path

from cffi import FFI

LOOPS = ("event_loop.c", "sequence_loop.c", "keys_loop.c", "join_loop.c", "slots_loop.c")
SOURCES = [Path(__file__).with_name(name).read_text() for name in LOOPS]
ffibuilder = FFI()
ffibuilder.cdef("\n".join(source.split("/* cdef begin */")[1].split("/* cdef end */")[0] for source in SOURCES))
ffibuilder.set_source("rstscope.connections._kernel", "\n".join(SOURCES), extra_compile_args=["-O2"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
