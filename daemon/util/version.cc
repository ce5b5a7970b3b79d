#include "util/version.h"

// Written by the Makefile, and rewritten only when the version changes: this is the one file
// that includes it, so that a new commit recompiles one object, not the whole daemon.
#include <spindle_version.h>

namespace spindle {

std::string_view version() { return SPINDLE_VERSION; }
std::string_view revision() { return SPINDLE_REVISION; }

}  // namespace spindle
