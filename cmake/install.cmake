# What `cmake --install` puts in place, and the .deb packages CPack builds from it (component:
# package):
#   runtime: libshmstream0      <libdir>/libshmstream.so.0
#   dev:     libshmstream-dev   include/shmstream/ (client.hpp, shmstream.h, ...), <libdir>/
#                               libshmstream.so and libshmstream.a, the CMake package
#                               (find_package(shmstream CONFIG REQUIRED)), shmstream.pc
#   tools:   shmstream          bin/shmstream, bin/shmstreamd, the systemd units and tmpfiles
#                               entry, man pages, bash completion
#   python:  python3-shmstream  the package `shmstream` (with its stubs)
# Where the units and the Python package go depends on the prefix given at install time
# (cmake/install_by_prefix.cmake): `cmake --install build --prefix ~/.local` puts the Python
# package in the user site and the user units where `systemd --user` finds them, ExecStart
# naming ~/.local/bin.
include(CMakePackageConfigHelpers)

install(TARGETS shmstream shmstreamd RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT tools)

set(cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/shmstream)
install(EXPORT shmstreamTargets NAMESPACE shmstream:: DESTINATION ${cmake_dir} COMPONENT dev)
configure_package_config_file(cmake/shmstreamConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/shmstreamConfig.cmake
  INSTALL_DESTINATION ${cmake_dir} PATH_VARS CMAKE_INSTALL_INCLUDEDIR)
# 0.x: a new minor version may break the API.
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/shmstreamConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/shmstreamConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/shmstreamConfigVersion.cmake
        DESTINATION ${cmake_dir} COMPONENT dev)

# pkg-config: the prefix is relative to the .pc file, so an installed tree can move.
set(pc_dir ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
file(RELATIVE_PATH SHMSTREAM_PC_TO_PREFIX /root/${pc_dir} /root)
configure_file(cmake/shmstream.pc.in ${CMAKE_CURRENT_BINARY_DIR}/shmstream.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/shmstream.pc DESTINATION ${pc_dir} COMPONENT dev)

# systemd: units for the system-wide and the per-user daemon and the per-user bridge
# templates, placed and pointed at bin/ by the install prefix; the runtime directory.
install(CODE "set(shmstream_part units)
              set(shmstream_source \"${PROJECT_SOURCE_DIR}\")
              set(shmstream_stage \"${CMAKE_CURRENT_BINARY_DIR}/install-stage\")
              include(\"${PROJECT_SOURCE_DIR}/cmake/install_by_prefix.cmake\")"
        COMPONENT tools)
install(FILES deploy/tmpfiles.d/shmstream.conf DESTINATION lib/tmpfiles.d COMPONENT tools)
# Man pages, compressed as Debian installs them (gzip -n: the same bytes on every build).
set(man_pages)
foreach(page shmstream.1 shmstreamd.8)
  set(compressed ${CMAKE_CURRENT_BINARY_DIR}/man/${page}.gz)
  add_custom_command(OUTPUT ${compressed}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_CURRENT_BINARY_DIR}/man
    COMMAND sh -c "gzip -9n -c \"$1\" > \"$2\"" gzip ${PROJECT_SOURCE_DIR}/docs/man/${page}
            ${compressed}
    DEPENDS ${PROJECT_SOURCE_DIR}/docs/man/${page} VERBATIM)
  string(REGEX REPLACE ".*\\." "" section ${page})
  install(FILES ${compressed} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section} COMPONENT tools)
  list(APPEND man_pages ${compressed})
endforeach()
add_custom_target(man_pages ALL DEPENDS ${man_pages})
install(FILES deploy/bash-completion/shmstream
        DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions COMPONENT tools)
install(FILES README.md LICENSE DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT tools)

# The Python package, under the prefix given at install time (install_by_prefix.cmake).
if(TARGET shmstream_python)
  install(CODE "set(shmstream_part python)
                set(shmstream_source \"${PROJECT_SOURCE_DIR}\")
                set(shmstream_python_package \"${SHMSTREAM_PYTHON_MODULE_DIR}/shmstream\")
                set(shmstream_python_minor \"${SHMSTREAM_PYTHON_MINOR}\")
                include(\"${PROJECT_SOURCE_DIR}/cmake/install_by_prefix.cmake\")"
          COMPONENT python)
endif()

# Debian's copyright file, in each package's documentation directory.
foreach(component_package runtime:libshmstream0 dev:libshmstream-dev tools:shmstream
                          python:python3-shmstream)
  string(REPLACE ":" ";" pair ${component_package})
  list(GET pair 0 component)
  list(GET pair 1 package)
  install(FILES deploy/debian/copyright DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/${package}
          COMPONENT ${component})
endforeach()

# CPack: the Debian way, one package per component (library, -dev, tools, Python). Their
# dependencies on system libraries are computed from the binaries (dpkg-shlibdeps), so they
# install on a Debian 12 that has none of the -dev packages; their dependencies on each other
# are exact versions. Build them with `cpack` in a build configured with
# CMAKE_INSTALL_PREFIX=/usr (deploy/setup does).
set(CPACK_GENERATOR DEB)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL runtime dev tools)
if(TARGET shmstream_python)
  list(APPEND CPACK_COMPONENTS_ALL python)
endif()
set(CPACK_PACKAGE_NAME shmstream)
set(CPACK_PACKAGE_VENDOR "shmstream")
set(CPACK_PACKAGE_CONTACT "shmstream maintainers <maintainers@shmstream.dev>")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "shmstream maintainers <maintainers@shmstream.dev>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "shared-memory streams: one producer, many zero-copy readers")
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://shmstream.dev")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_STRIP_FILES ON)  # debug info stays in the build tree
set(CPACK_OUTPUT_FILE_PREFIX ${CMAKE_BINARY_DIR}/package)
set(exact "(= ${PROJECT_VERSION})")

set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME libshmstream0)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_COMPONENT_RUNTIME_DESCRIPTION
    "shmstream client library\n libshmstream.so.0: create, read and manage shared-memory streams\
 from C and C++ (readers map the data read-only and read it zero-copy).")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libshmstream-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "libshmstream0 ${exact}")
# libshmstream.a carries its dependencies as link flags: linking it needs their -dev packages.
set(CPACK_DEBIAN_DEV_PACKAGE_SUGGESTS "libcapnp-dev, libfmt-dev")
set(CPACK_COMPONENT_DEV_DESCRIPTION
    "shmstream client library: development files\n Headers (C and C++), the static library, the\
 CMake package (find_package(shmstream)) and the pkg-config file.")

set(CPACK_DEBIAN_TOOLS_PACKAGE_NAME shmstream)
set(CPACK_DEBIAN_TOOLS_PACKAGE_SECTION utils)
set(CPACK_COMPONENT_TOOLS_DESCRIPTION
    "shared-memory streams: daemon and command line\n shmstream fans a byte or record stream out\
 to any number of local reader processes, each reading zero-copy from a read-only mapping at its\
 own offset. This package has the shmstreamd daemon, the shmstream CLI, systemd units, man pages\
 and bash completion.")

set(CPACK_DEBIAN_PYTHON_PACKAGE_NAME python3-shmstream)
set(CPACK_DEBIAN_PYTHON_PACKAGE_SECTION python)
# Built for Debian 12's python3 (3.11); the module links the client statically.
set(CPACK_DEBIAN_PYTHON_PACKAGE_DEPENDS "python3 (>= 3.11), python3 (<< 3.12)")
set(CPACK_DEBIAN_PYTHON_PACKAGE_RECOMMENDS "shmstream ${exact}")
set(CPACK_COMPONENT_PYTHON_DESCRIPTION
    "shared-memory streams: Python module\n The package `shmstream`: zero-copy memoryviews of\
 streams, asyncio iteration, type stubs.")
include(CPack)
