// A doubly linked list threaded through its elements: adding and removing allocate nothing,
// and an element knows how to leave the list in O(1). What a worker keeps of its
// connections, and the admin server of its own.
#pragma once

#include <vector>

namespace spindle {

template <typename T>
class IntrusiveList;

// The links an element carries; T derives from ListNode<T>.
template <typename T>
class ListNode {
 private:
  friend class IntrusiveList<T>;
  T* prev_ = nullptr;
  T* next_ = nullptr;
};

template <typename T>
class IntrusiveList {
 public:
  IntrusiveList() = default;
  IntrusiveList(const IntrusiveList&) = delete;
  IntrusiveList& operator=(const IntrusiveList&) = delete;

  void pushFront(T* element) {
    ListNode<T>* node = element;
    node->next_ = head_;
    node->prev_ = nullptr;
    if (head_ != nullptr) static_cast<ListNode<T>*>(head_)->prev_ = element;
    head_ = element;
  }

  // `element` must be in this list.
  void remove(T* element) {
    ListNode<T>* node = element;
    if (node->prev_ != nullptr) static_cast<ListNode<T>*>(node->prev_)->next_ = node->next_;
    if (node->next_ != nullptr) static_cast<ListNode<T>*>(node->next_)->prev_ = node->prev_;
    if (head_ == element) head_ = node->next_;
    node->prev_ = node->next_ = nullptr;
  }

  bool empty() const { return head_ == nullptr; }

  template <typename Predicate>
  bool anyOf(Predicate&& predicate) const {
    for (T* e = head_; e != nullptr; e = static_cast<ListNode<T>*>(e)->next_) {
      if (predicate(*e)) return true;
    }
    return false;
  }

  // Calls `visit` on each element; `visit` may remove any element, itself included (a close
  // that frees others): it walks a copy taken first.
  template <typename Visit>
  void forEach(Visit&& visit) const {
    std::vector<T*> all;
    for (T* e = head_; e != nullptr; e = static_cast<ListNode<T>*>(e)->next_) all.push_back(e);
    for (T* e : all) visit(*e);
  }

 private:
  T* head_ = nullptr;
};

}  // namespace spindle
