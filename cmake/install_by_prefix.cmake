# Runs at install time (install(CODE) includes it), when the prefix is known: `cmake --install
# --prefix ~/.local` must put things where the system looks under that prefix, which a
# DESTINATION fixed at configure time cannot do. Expects, set by the caller:
#   shmstream_part          units | python
#   shmstream_source        the source tree (deploy/systemd's templates)
#   shmstream_stage         a build-tree directory to configure files in
#   shmstream_python_package the package assembled in the build tree (part python)
#   shmstream_python_minor  the minor version of the python3 it is built for (part python)
set(prefix "${CMAKE_INSTALL_PREFIX}")

if(shmstream_part STREQUAL "units")
  # systemd --user looks in <prefix>/share/systemd/user for ~/.local and /usr/local (and
  # /usr/lib/systemd/user, Debian's place, for /usr); ExecStart names this prefix's binaries.
  if(prefix STREQUAL "/usr")
    set(user_units lib/systemd/user)
  else()
    set(user_units share/systemd/user)
  endif()
  set(SHMSTREAM_BINDIR "${prefix}/bin")
  foreach(unit system/shmstreamd.service user/shmstreamd.service
               user/shmstream-bridge-out@.service user/shmstream-bridge-in@.service)
    configure_file("${shmstream_source}/deploy/systemd/${unit}.in"
                   "${shmstream_stage}/${prefix}/${unit}" @ONLY)
  endforeach()
  file(INSTALL DESTINATION "${prefix}/lib/systemd/system" TYPE FILE
       FILES "${shmstream_stage}/${prefix}/system/shmstreamd.service"
             "${shmstream_source}/deploy/systemd/system/shmstreamd.socket")
  file(INSTALL DESTINATION "${prefix}/${user_units}" TYPE FILE
       FILES "${shmstream_stage}/${prefix}/user/shmstreamd.service"
             "${shmstream_source}/deploy/systemd/user/shmstreamd.socket"
             "${shmstream_stage}/${prefix}/user/shmstream-bridge-out@.service"
             "${shmstream_stage}/${prefix}/user/shmstream-bridge-in@.service")
elseif(shmstream_part STREQUAL "python")
  # Debian's python3 reads /usr/lib/python3/dist-packages and
  # /usr/local/lib/python3.X/dist-packages; elsewhere (the user site ~/.local, a venv-like
  # prefix) the standard lib/python3.X/site-packages.
  if(prefix STREQUAL "/usr")
    set(site lib/python3/dist-packages)
  elseif(prefix STREQUAL "/usr/local")
    set(site lib/python3.${shmstream_python_minor}/dist-packages)
  else()
    set(site lib/python3.${shmstream_python_minor}/site-packages)
  endif()
  file(GLOB core "${shmstream_python_package}/_core*.so")
  file(INSTALL DESTINATION "${prefix}/${site}/shmstream" TYPE MODULE FILES ${core})
  file(INSTALL DESTINATION "${prefix}/${site}/shmstream" TYPE FILE
       FILES "${shmstream_python_package}/__init__.py" "${shmstream_python_package}/__init__.pyi"
             "${shmstream_python_package}/py.typed")
endif()
