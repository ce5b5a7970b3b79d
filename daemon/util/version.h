// What this binary was built from, for --version, spindle_build_info and the status page.
#pragma once

#include <string_view>

namespace spindle {

// `git describe --tags --always --dirty` of the checkout at build time, or the VERSION given
// to make, or what `git archive` wrote into a source tarball; "unknown" without any of them.
std::string_view version();
// The commit's full hash (REVISION given to make overrides it); "unknown" outside git.
std::string_view revision();

}  // namespace spindle
