// Registers the addon's functions; per environment, it keeps the shared state and stops the
// reactor thread when the environment goes away.
#include <napi.h>

#include "addon.h"

namespace vmd {

namespace {

// Runs when the environment is torn down (the loop ended, or a worker exits), before Node
// finalizes the thread-safe functions: joining the reactor here guarantees that no event is
// posted to a function that is already gone. (process.exit() on the main thread skips
// cleanup hooks; there the thread simply ends with the process, and nothing of ours is
// destroyed under it: the reactor is never a static object.)
void StopReactor(AddonData* data) {
  if (data->reactor) data->reactor->Stop();
}

}  // namespace

}  // namespace vmd

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  using namespace vmd;
  AddonData* data = new AddonData();
  env.SetInstanceData<AddonData>(data);
  env.AddCleanupHook(StopReactor, data);
  InitProcess(env, exports);
  InitChannel(env, exports);
  InitTap(env, exports);
  InitPty(env, exports);
  InitHypervisor(env, exports);
  return exports;
}

NODE_API_MODULE(vmd_native, InitAddon)
