{
  "targets": [{
    "target_name": "replicafs_fuse",
    "include_dirs": [
      "<!(node -p \"require('path').dirname(require.resolve('napi-macros'))\")",
      "src",
      "<!@(pkg-config --cflags-only-I fuse | sed 's/-I//g')"
    ],
    "defines": ["_FILE_OFFSET_BITS=64", "NAPI_VERSION=6"],
    "libraries": ["<!@(pkg-config --libs fuse)"],
    "sources": ["build-src/fuse-native.c", "src/local.c", "src/journal.c"],
    "cflags": ["-g", "-O2", "-Wall", "-Wno-unused-result", "-Wno-unused-variable", "-Wno-unused-function"]
  }]
}
