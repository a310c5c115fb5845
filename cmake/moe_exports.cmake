# Writes libmoe.so's linker version script: every function the public headers
# (include/moe/*.h) declare is exported, everything else in the library stays
# local. Run as cmake -DOUT=moe.map -DHEADER_DIR=include/moe -P moe_exports.cmake.
#
# A declaration is a name moe_... followed by "(" once comments are removed
# (a function pointer type, "(*moe_fn)(", is not one); a name declared but
# never defined is caught by the install test, which compares this list with
# what libmoe.so exports.
file(GLOB headers "${HEADER_DIR}/*.h")
set(names "")
foreach(h ${headers})
  file(READ "${h}" text)
  string(REGEX REPLACE "/\\*([^*]|\\*+[^*/])*\\*+/" " " text "${text}")
  string(REGEX REPLACE "//[^\n]*" " " text "${text}")
  string(REGEX MATCHALL "moe_[A-Za-z0-9_]+[ \t\r\n]*\\(" found "${text}")
  foreach(f ${found})
    string(REGEX REPLACE "[ \t\r\n]*\\($" "" f "${f}")
    list(APPEND names "${f}")
  endforeach()
endforeach()
list(REMOVE_DUPLICATES names)
list(SORT names)
if(NOT names)
  message(FATAL_ERROR "moe_exports.cmake: no moe_* function found in ${HEADER_DIR}/*.h")
endif()
set(map "/* libmoe.so's exports: the functions of include/moe/*.h (made by cmake/moe_exports.cmake) */\n{\n  global:\n")
foreach(n ${names})
  string(APPEND map "    ${n};\n")
endforeach()
string(APPEND map "  local:\n    *;\n};\n")
# rewritten only when it changes, so the library is not relinked for nothing
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
  if(old STREQUAL map)
    return()
  endif()
endif()
file(WRITE "${OUT}" "${map}")
