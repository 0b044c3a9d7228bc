#include "shmstream/cancellation.hpp"

#include "shm/futex.hpp"

namespace shmstream {

void Cancellation::cancel() {
  // Pairs with the acquire load in cancelled(); waiters sleeping on word_ see the new value.
  word_.store(1, std::memory_order_release);
  shm::futex_wake_all(&word_, /*shared=*/false);
}

}  // namespace shmstream
