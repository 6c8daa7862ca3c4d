// Runtime ISA dispatch (see cpu_isa.h).
#include "cpu_isa.h"

#include <cstdlib>
#include <cstring>
#include <string>

namespace afgan_isa {
namespace {

struct State {
  int chosen = 0;
  std::string compiled, supported, chosen_name, error;
};

std::string LevelName(int l) { return l == 0 ? "generic" : "v" + std::to_string(l); }

#if defined(AFGAN_ISA_X86)
bool CpuRuns(int level) {
  __builtin_cpu_init();
  switch (level) {
    case 2: return __builtin_cpu_supports("x86-64-v2");
    case 3: return __builtin_cpu_supports("x86-64-v3");
    case 4: return __builtin_cpu_supports("x86-64-v4");
  }
  return false;
}
constexpr int kLevels[] = {
    2,
#if defined(AFGAN_ISA_HAVE_V3)
    3,
#endif
#if defined(AFGAN_ISA_HAVE_V4)
    4,
#endif
};
#else
bool CpuRuns(int level) { return level == 0; }
constexpr int kLevels[] = {0};
#endif

State Detect() {
  State s;
  int best = -1;
  for (int l : kLevels) {
    s.compiled += (s.compiled.empty() ? "" : ",") + LevelName(l);
    if (CpuRuns(l)) {
      s.supported += (s.supported.empty() ? "" : ",") + LevelName(l);
      best = l;
    }
  }
  if (best < 0) {  // a pre-2009 x86-64 CPU: run the baseline anyway (it may fault) and say so
    best = kLevels[0];
    s.error = "this CPU does not report x86-64-v2 (SSE4.2/POPCNT), the library's minimum";
  }
  s.chosen = best;
  const char* env = std::getenv("AFGAN_TF_OPS_ISA");
  if (env && *env) {
    int want = -1;
    for (int l : kLevels)
      if (LevelName(l) == env) want = l;
    if (want < 0) {
      s.error = std::string("AFGAN_TF_OPS_ISA=") + env + " is not one of the compiled levels " + s.compiled;
    } else if (!CpuRuns(want)) {
      s.error = std::string("AFGAN_TF_OPS_ISA=") + env + ": this CPU cannot run it (it runs " +
                (s.supported.empty() ? std::string("none") : s.supported) + ")";
    } else {
      s.chosen = want;
    }
  }
  s.chosen_name = LevelName(s.chosen);
  return s;
}

const State& Get() {
  static const State s = Detect();
  return s;
}

}  // namespace

int ChosenLevel() { return Get().chosen; }

afgan_flrelu::RunEngineFn FlreluEngine() {
#if defined(AFGAN_ISA_X86)
  switch (ChosenLevel()) {
#if defined(AFGAN_ISA_HAVE_V4)
    case 4: return &afgan_flrelu::isa_v4::RunEngine;
#endif
#if defined(AFGAN_ISA_HAVE_V3)
    case 3: return &afgan_flrelu::isa_v3::RunEngine;
#endif
    default: return &afgan_flrelu::isa_v2::RunEngine;
  }
#else
  return &afgan_flrelu::isa_generic::RunEngine;
#endif
}

}  // namespace afgan_isa

extern "C" {
const char* afgan_tf_ops_isa_compiled() { return afgan_isa::Get().compiled.c_str(); }
const char* afgan_tf_ops_isa_supported() { return afgan_isa::Get().supported.c_str(); }
const char* afgan_tf_ops_isa_chosen() { return afgan_isa::Get().chosen_name.c_str(); }
const char* afgan_tf_ops_isa_error() { return afgan_isa::Get().error.c_str(); }
}
