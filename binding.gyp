{
  "targets": [
    {
      "target_name": "vmd_native",
      "sources": [
        "native/addon.cc",
        "native/channel.cc",
        "native/hypervisor.cc",
        "native/process.cc",
        "native/pty.cc",
        "native/reactor.cc",
        "native/tap.cc"
      ],
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"
      ],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags_cc!": ["-std=gnu++17", "-std=gnu++1y", "-std=gnu++20"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Werror"],
      "libraries": ["-lutil"],
      "ldflags": ["-pthread"]
    }
  ]
}
