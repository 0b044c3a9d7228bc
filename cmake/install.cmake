# What `cmake --install` puts in place, and the .deb CPack builds from it:
#   bin/                      shmstream, shmstreamd
#   include/shmstream/        client.hpp (C++), shmstream.h (C), status.hpp, cancellation.hpp
#   <libdir>/                 libshmstream.so.0 (+ .so), libshmstream.a
#   <libdir>/cmake/shmstream/ the CMake package: find_package(shmstream CONFIG REQUIRED)
#   <libdir>/pkgconfig/       shmstream.pc
#   lib/systemd/{system,user}/ and lib/tmpfiles.d/: the daemon's units (deploy/)
include(CMakePackageConfigHelpers)

install(TARGETS shmstream shmstreamd RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

set(cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/shmstream)
install(EXPORT shmstreamTargets NAMESPACE shmstream:: DESTINATION ${cmake_dir})
configure_package_config_file(cmake/shmstreamConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/shmstreamConfig.cmake
  INSTALL_DESTINATION ${cmake_dir} PATH_VARS CMAKE_INSTALL_INCLUDEDIR)
# 0.x: a new minor version may break the API.
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/shmstreamConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/shmstreamConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/shmstreamConfigVersion.cmake
        DESTINATION ${cmake_dir})

# pkg-config: the prefix is relative to the .pc file, so an installed tree can move.
set(pc_dir ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
file(RELATIVE_PATH SHMSTREAM_PC_TO_PREFIX /root/${pc_dir} /root)
configure_file(cmake/shmstream.pc.in ${CMAKE_CURRENT_BINARY_DIR}/shmstream.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/shmstream.pc DESTINATION ${pc_dir})

# systemd: units for the system-wide and the per-user daemon, the per-user bridge templates,
# and the runtime directory.
foreach(scope system user)
  install(FILES ${CMAKE_CURRENT_BINARY_DIR}/deploy/systemd/${scope}/shmstreamd.service
                ${CMAKE_CURRENT_BINARY_DIR}/deploy/systemd/${scope}/shmstreamd.socket
          DESTINATION lib/systemd/${scope})
endforeach()
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/deploy/systemd/user/shmstream-bridge-out@.service
              ${CMAKE_CURRENT_BINARY_DIR}/deploy/systemd/user/shmstream-bridge-in@.service
        DESTINATION lib/systemd/user)
install(FILES deploy/tmpfiles.d/shmstream.conf DESTINATION lib/tmpfiles.d)
install(FILES README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})

# CPack: one .deb with the library, headers, tools and units. Its dependencies are computed
# from the binaries (dpkg-shlibdeps), so it installs on a Debian 12 that has none of the -dev
# packages. Build it with `cpack` in a build configured with CMAKE_INSTALL_PREFIX=/usr
# (deploy/setup does), so that the units and the library's daemon lookup point at /usr/bin.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME shmstream)
set(CPACK_PACKAGE_VENDOR "shmstream")
set(CPACK_PACKAGE_CONTACT "shmstream developers <shmstream@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "shared-memory streams: one producer, many zero-copy readers")
set(CPACK_PACKAGE_DESCRIPTION
    "shmstream fans a byte or record stream out to any number of local reader processes, each\
 reading zero-copy from a read-only mapping at its own offset. Includes the shmstreamd daemon,\
 the shmstream CLI, the C and C++ client library with headers, CMake and pkg-config files,\
 and systemd units.")
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION libs)
# The Python module is built for Debian 12's python3 (3.11).
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "python3 (>= 3.11), python3 (<< 3.12)")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_STRIP_FILES ON)  # debug info stays in the build tree
set(CPACK_OUTPUT_FILE_PREFIX ${CMAKE_BINARY_DIR}/package)
include(CPack)
