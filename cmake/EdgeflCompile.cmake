# Warning, sanitizer and visibility settings shared by every edgefl target.

add_library(edgefl_compile_options INTERFACE)
target_compile_options(edgefl_compile_options INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align
  -Wunused -Woverloaded-virtual -Wimplicit-fallthrough)
if(EDGEFL_WERROR)
  target_compile_options(edgefl_compile_options INTERFACE -Werror)
endif()

if(EDGEFL_SANITIZE)
  if(EDGEFL_SANITIZE STREQUAL "ON" OR EDGEFL_SANITIZE STREQUAL "1")
    set(EDGEFL_SANITIZE "address,undefined")
  endif()
  message(STATUS "edgefl: sanitizers ${EDGEFL_SANITIZE}")
  add_compile_options(-fsanitize=${EDGEFL_SANITIZE} -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=${EDGEFL_SANITIZE})
endif()

# edgefl_target(<target>): apply the project's compile options to a target.
function(edgefl_target target)
  target_link_libraries(${target} PRIVATE edgefl_compile_options)
endfunction()
