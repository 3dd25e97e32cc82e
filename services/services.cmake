# services.cmake - services/services.tsv (the table of the services) made into a C
# header, deta_services.h, at configure time; the target deta_services gives its
# include directory, and DETA_SERVICE_NAMES lists the names (the executables to build).
#
# Design: the table stays plain text, since the shell scripts and the deployment
# checks read it too; C gets it through configure_file rather than a generator
# program run at build time: reading five rows needs nothing but CMake, and
# CMAKE_CONFIGURE_DEPENDS re-runs the configuration when the table changes. A row
# that is not three tab-separated cells (name, port, database) stops the
# configuration, so a broken table never builds.
set(DETA_SERVICES_TSV ${CMAKE_CURRENT_SOURCE_DIR}/services.tsv)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${DETA_SERVICES_TSV})

file(STRINGS ${DETA_SERVICES_TSV} deta_service_rows REGEX "^[^#]")
set(DETA_SERVICE_DEFINES "")
set(DETA_SERVICE_LIST "")
set(DETA_SERVICE_COUNT 0)
set(DETA_SERVICE_NAMES "")
foreach(row IN LISTS deta_service_rows)
  string(REPLACE "\t" ";" cells "${row}")
  list(LENGTH cells ncells)
  if(NOT ncells EQUAL 3)
    message(FATAL_ERROR "services.tsv: \"${row}\" is not service<TAB>port<TAB>database")
  endif()
  list(GET cells 0 name)
  list(GET cells 1 port)
  list(GET cells 2 database)
  if(NOT name MATCHES "^[a-z][a-z-]*$" OR NOT port MATCHES "^[1-9][0-9]*$"
     OR NOT database MATCHES "^[a-z_]+$")
    message(FATAL_ERROR "services.tsv: \"${row}\" has a malformed cell")
  endif()
  string(TOUPPER "${name}" macro)
  string(REPLACE "-" "_" macro "${macro}")
  string(APPEND DETA_SERVICE_DEFINES
         "#define DETA_SERVICE_${macro} {\"${name}\", ${port}, \"${database}\"}\n")
  string(APPEND DETA_SERVICE_LIST " DETA_SERVICE_${macro},")
  list(APPEND DETA_SERVICE_NAMES ${name})
  math(EXPR DETA_SERVICE_COUNT "${DETA_SERVICE_COUNT} + 1")
endforeach()

configure_file(${CMAKE_CURRENT_SOURCE_DIR}/deta_services.h.in
               ${CMAKE_CURRENT_BINARY_DIR}/generated/deta_services.h @ONLY)
add_library(deta_services INTERFACE)
target_include_directories(deta_services INTERFACE ${CMAKE_CURRENT_BINARY_DIR}/generated)
target_link_libraries(deta_services INTERFACE deta)
